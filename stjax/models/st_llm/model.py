"""ST-LLM (Liu et al., MDM 2024) exactly as its released code builds it (docs/published_code.md).

    per node: the T_in steps of [x channels, time of day, day of week] flattened -> Dense -> E_P [D]
    E_T = time_day[last step's tod index] + time_week[last step's dow]            [D]
    E_S = node_emb[n]                                                             [D]
    fusion Dense(concat[E_P, E_T, E_S]) -> d                   (no activation; 3D = d = 768 in GPT-2)
    GPT-2 (causal mask, wpe positions 0..N-1 = node index, dropout 0.1) incl. ln_f  [B, N, d]
    Dense(d -> T_out * C_out) per node -> pred [B, T_out, N, C_out]

One token per node. The released code feeds the 3-channel x (value, tod fraction, dow integer) to
its first 1x1 conv, so the calendar features are appended here as two extra input channels
(ST-LLM's own data carries them inside x). The tables are Xavier-uniform initialised, the
time-of-day table has `steps_per_day` rows. PFA (`pfa(U)`: LayerNorms everywhere, attention of
the last U blocks, wpe, ln_f and the new layers train) is the optimizer mask of stjax.train.optim.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from stjax.errors import UserError
from stjax.kernels import Kernels
from stjax.layers.embeddings import CalendarEmbedding, NodeEmbedding
from stjax.models.backbones.config import LLM_KEY, check_pfa, llm_config, warn_if_random
from stjax.models.backbones.gpt2 import GPT2, GPT2Config
from stjax.models.registry import register


class STLLM(nn.Module):
  """ST-LLM forecaster. `__call__(batch, train) -> (pred [B, T_out, N, C_out], aux dict)`.

  Attributes:
    llm: GPT-2 config (causal, use_wpe=True).
    num_nodes, input_len, output_len, in_channels, out_channels, steps_per_day: data shape.
    embed_dim: D.
  """

  llm: GPT2Config
  num_nodes: int
  input_len: int
  output_len: int
  in_channels: int
  out_channels: int
  steps_per_day: int
  embed_dim: int = 256

  @nn.compact
  def __call__(self, batch: dict[str, Any], train: bool = False):
    """batch: x [B, T_in, N, C_in], tod [B, T_in], dow [B, T_in] -> (pred, {"aux_loss": 0})."""
    x, tod, dow = batch["x"], batch["tod"], batch["dow"]
    b, t, n, c = x.shape
    if (t, n, c) != (self.input_len, self.num_nodes, self.in_channels):
      raise ValueError(
        f"STLLM built for x [*, {self.input_len}, {self.num_nodes}, {self.in_channels}], got {x.shape}"
      )
    calendar = jnp.stack([tod.astype(jnp.float32), dow.astype(jnp.float32)], axis=-1)  # [B, T, 2]
    values = jnp.concatenate(
      [x.astype(jnp.float32), jnp.broadcast_to(calendar[:, :, None], (b, t, n, 2))], -1
    )
    values = values.transpose(0, 2, 1, 3).reshape(b, n, t * (c + 2))
    e_p = nn.Dense(self.embed_dim, name="start_conv")(values)
    tod_e, dow_e = CalendarEmbedding(self.steps_per_day, self.embed_dim, name="calendar")(
      tod[:, -1], dow[:, -1]
    )
    e_t = jnp.broadcast_to((tod_e + dow_e)[:, None], (b, n, self.embed_dim))
    e_s = jnp.broadcast_to(NodeEmbedding(n, self.embed_dim, name="nodes")()[None], (b, n, self.embed_dim))
    tokens = nn.Dense(self.llm.n_embd, name="feature_fusion")(jnp.concatenate([e_p, e_t, e_s], axis=-1))
    hidden = GPT2(self.llm, name=LLM_KEY)(tokens, deterministic=not train)
    out = nn.Dense(self.output_len * self.out_channels, name="regression_layer")(hidden.astype(jnp.float32))
    pred = out.reshape(b, n, self.output_len, self.out_channels).transpose(0, 2, 1, 3)
    return pred, {"aux_loss": jnp.zeros((), jnp.float32)}


@register("st_llm")
def build(mc, spec, kernels: Kernels = Kernels(), pretrained_config: Any = None) -> STLLM:
  """ST-LLM from `config.model` and a DataSpec, with the run's resolved `kernels` (GPT-2 only, so
  `pretrained_config` is unused)."""
  del pretrained_config
  check_pfa(mc)
  cfg = llm_config(mc, causal=mc.causal, use_wpe=True, kernels=kernels)
  if spec.num_nodes > cfg.n_positions:
    raise UserError(
      f"config.model.name=st_llm: {spec.num_nodes} nodes exceed n_positions={cfg.n_positions} "
      "(ST-LLM uses one GPT-2 position per node)"
    )
  warn_if_random(mc)
  return STLLM(
    llm=cfg,
    num_nodes=spec.num_nodes,
    input_len=spec.input_len,
    output_len=spec.output_len,
    in_channels=spec.in_channels,
    out_channels=spec.out_channels,
    steps_per_day=spec.steps_per_day,
    embed_dim=mc.embed_dim,
  )
