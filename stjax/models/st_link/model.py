"""ST-LINK (arXiv 2509.13753): a pretrained LLM (GPT-2 or Llama) with SE-Attention, MRFFN memory
and RevIN.

    x [B, T_in, N, C_in] --RevIN--> patches [B, N, P, patch_len * C_in]   (P = T_in / patch_len)
    token = Dense(concat[patch, tod emb, dow emb, node emb])                [B, N * P, d]
    LLM blocks (`model.backbone`: gpt2 | llama): SE-Attention (time rotation by the patch's last time offset, space rotation by
      node phases), + MRFFN in `mrffn_layers`, full attention over all N * P tokens
    head: per node, flatten the P outputs -> Dense -> (T_out, C_out); RevIN inverse
    -> pred [B, T_out, N, C_out] in scaled units, aux {"aux_loss", memory statistics}

Design choices and their reasons: docs/st_link.md. Partially Frozen Attention is the optimizer
mask `pfa(U)` (stjax.train.optim) on `params["llm"]`, never stop_gradient in the model.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from stjax.errors import UserError
from stjax.kernels import Kernels
from stjax.layers.embeddings import CalendarEmbedding, NodeEmbedding, laplacian_node_init, xavier
from stjax.layers.revin import RevIN
from stjax.models.backbones import backbone_name, build_backbone, hidden_size
from stjax.models.backbones.config import LLM_KEY, backbone_config, check_pfa, warn_if_random
from stjax.models.backbones.llama import rope_inverse_frequencies
from stjax.models.registry import register
from stjax.models.st_link.memory import MEMORY, MRFFN, memory_stats
from stjax.models.st_link.se_attention import SERotary, rotary_dims, se_attention_class


def check_patches(input_len: int, patch_len: int) -> int:
  """Number of patches; UserError naming model.patch_len if it does not divide T_in."""
  if patch_len < 1 or input_len % patch_len:
    raise UserError(
      f"config.model.patch_len: {patch_len} does not divide the input length {input_len} "
      f"(use a divisor of {input_len}, e.g. 1)"
    )
  return input_len // patch_len


class STLink(nn.Module):
  """ST-LINK forecaster. `__call__(batch, train) -> (pred [B, T_out, N, C_out], aux dict)`.

  Attributes:
    llm: backbone config, `GPT2Config` or `LlamaConfig` (width, heads, blocks, dropout, causal;
      GPT-2's `use_wpe` is False: see se_attention). The trunk lives at params["llm"].
    num_nodes, output_len, in_channels, out_channels, steps_per_day: data shape (DataSpec).
    input_offsets: time offset in steps of each input step (rotary positions use these).
    patch_len, embed_dim: token layout and embedding width.
    node_init: initialiser of the node table.
    se_attention, se_mode, temporal_dims, rope_base: SE-Attention (False = wpe by patch index).
    mrffn_layers: blocks with MRFFN; mrffn: factory of one MRFFN module.
    revin, revin_affine: RevIN switches.
  """

  llm: Any
  num_nodes: int
  output_len: int
  in_channels: int
  out_channels: int
  input_offsets: tuple[int, ...]
  steps_per_day: int
  patch_len: int = 3
  embed_dim: int = 64
  node_init: Callable = xavier
  se_attention: bool = True
  se_mode: str = "split"
  temporal_dims: int = 32
  rope_base: float = 10000.0
  mrffn_layers: tuple[int, ...] = ()
  mrffn: Callable[[], nn.Module] | None = None
  revin: bool = True
  revin_affine: bool = True

  def setup(self):
    self.num_patches = check_patches(len(self.input_offsets), self.patch_len)
    self.calendar = CalendarEmbedding(self.steps_per_day, self.embed_dim)
    self.nodes = NodeEmbedding(self.num_nodes, self.embed_dim, self.node_init)
    self.family = backbone_name(self.llm)
    self.token_embedding = nn.Dense(hidden_size(self.llm), dtype=self.llm.compute_dtype)
    if self.revin:
      self.norm = RevIN(self.in_channels, self.revin_affine)
    if self.se_attention:
      td, _ = rotary_dims(self.llm.head_dim, self.se_mode, self.temporal_dims)
      # Llama: time pairs keep the pretrained rotary frequencies (se_attention.py, `pairs` layout).
      omega = (
        tuple(float(w) for w in rope_inverse_frequencies(self.llm)[: td // 2])
        if self.family == "llama"
        else None
      )
      self.rotary = SERotary(self.llm.head_dim, self.se_mode, self.temporal_dims, self.rope_base, omega)
      attention = lambda i: functools.partial(
        se_attention_class(self.family),
        self.llm,  # noqa: E731
        mode=self.se_mode,
        temporal_dims=self.temporal_dims,
      )
    else:
      attention = None
    extra = (lambda i: self.mrffn if i in self.mrffn_layers else None) if self.mrffn else None
    self.trunk = build_backbone(
      self.family, self.llm, attention_factory=attention, extra_ffn_factory=extra, module_name=LLM_KEY
    )
    self.head = nn.Dense(self.output_len * self.out_channels, dtype=jnp.float32)

  def __call__(self, batch: dict[str, Any], train: bool = False):
    """batch: x [B, T_in, N, C_in], tod [B, T_in], dow [B, T_in] -> (pred, aux)."""
    x = batch["x"]
    b, t, n, c = x.shape
    p, pl = self.num_patches, self.patch_len
    if (t, n, c) != (len(self.input_offsets), self.num_nodes, self.in_channels):
      raise ValueError(
        f"STLink built for x [*, {len(self.input_offsets)}, {self.num_nodes}, {self.in_channels}], "
        f"got {x.shape}"
      )
    if self.revin:
      x, stats = self.norm.normalize(x)
    last = np.arange(p) * pl + pl - 1  # index of each patch's last step
    patches = x.transpose(0, 2, 1, 3).reshape(b, n, p, pl * c)
    tod_e, dow_e = self.calendar(batch["tod"][:, last], batch["dow"][:, last])  # [B, P, E]
    node_e = self.nodes()  # [N, E]
    e = self.embed_dim
    feats = jnp.concatenate(
      [
        patches.astype(jnp.float32),
        jnp.broadcast_to(tod_e[:, None], (b, n, p, e)),
        jnp.broadcast_to(dow_e[:, None], (b, n, p, e)),
        jnp.broadcast_to(node_e[None, :, None], (b, n, p, e)),
      ],
      axis=-1,
    )
    tokens = self.token_embedding(feats).reshape(b, n * p, -1)  # token s = node s // P, patch s % P

    if self.se_attention:
      time_pos = jnp.asarray(np.tile(np.asarray(self.input_offsets, np.float32)[last], n))
      token_node = jnp.asarray(np.repeat(np.arange(n), p))
      kwargs = self.rotary(time_pos, node_e, token_node)
    elif self.family == "llama":  # Llama's own RoPE at the patch index
      kwargs = {"positions": jnp.asarray(np.tile(np.arange(p), n))}
    else:  # GPT-2's learned table at the patch index
      if p > self.llm.n_positions:
        raise UserError(
          f"config.model.se_attention=False: {p} patches exceed n_positions={self.llm.n_positions}"
        )
      tokens = tokens + jnp.tile(self.trunk.wpe.embedding[:p], (n, 1))[None].astype(tokens.dtype)
      kwargs = {}
    hidden, aux_loss = self.trunk(tokens, deterministic=not train, attention_kwargs=kwargs, return_aux=True)

    out = self.head(hidden.astype(jnp.float32).reshape(b, n, -1))  # [B, N, T_out * C_out]
    pred = out.reshape(b, n, self.output_len, self.out_channels).transpose(0, 2, 1, 3)
    if self.revin:
      pred = self.norm.denormalize(pred, stats, slice(0, self.out_channels))
    aux = {"aux_loss": aux_loss}
    if self.mrffn_layers:
      aux.update(memory_stats(self.trunk.variables.get(MEMORY, {})))
    return pred, aux


def resolve_mrffn_layers(mc) -> tuple[int, ...]:
  """`model.mrffn_layers`, with () meaning the last `unfrozen_layers` blocks; validated."""
  layers = tuple(int(i) for i in mc.mrffn_layers) or tuple(
    range(mc.llm_layers - mc.unfrozen_layers, mc.llm_layers)
  )
  bad = [i for i in layers if not 0 <= i < mc.llm_layers]
  if bad:
    raise UserError(f"config.model.mrffn_layers: {bad} outside 0..{mc.llm_layers - 1}")
  return layers


@register("st_link")
def build(mc, spec, kernels: Kernels = Kernels(), pretrained_config: Any = None) -> STLink:
  """ST-LINK from `config.model` and a DataSpec, with the run's resolved `kernels` and the
  pretrained backbone's config (Llama geometry) if any."""
  check_pfa(mc)
  check_patches(spec.input_len, mc.patch_len)
  if len(spec.input_offsets) != spec.input_len:
    raise UserError(f"data: {len(spec.input_offsets)} input offsets for input_len {spec.input_len}")
  if mc.revin and spec.out_channels > spec.in_channels:
    raise UserError(
      f"config.model.revin: predicts {spec.out_channels} channels from {spec.in_channels} inputs; "
      "RevIN de-normalises outputs with the statistics of the first out_channels inputs"
    )
  cfg = backbone_config(
    mc, causal=mc.causal, use_wpe=False, kernels=kernels, pretrained_config=pretrained_config
  )
  if mc.se_attention:
    rotary_dims(cfg.head_dim, mc.se_mode, mc.temporal_dims)
  if mc.node_emb_init == "laplacian":
    if spec.adjacency is None:
      raise UserError(
        "config.model.node_emb_init=laplacian: the dataset has no adjacency (set data.graph_path)"
      )
    if not 1 <= mc.embed_dim <= spec.num_nodes - 1:
      raise UserError(
        f"config.model.node_emb_init=laplacian: embed_dim={mc.embed_dim} needs 1..N-1={spec.num_nodes - 1} "
        "non-trivial eigenvectors"
      )
    node_init = laplacian_node_init(spec.adjacency)
  elif mc.node_emb_init == "xavier":
    node_init = xavier
  else:
    raise UserError(f"config.model.node_emb_init: {mc.node_emb_init!r} is not xavier or laplacian")
  mrffn = None
  if mc.mrffn:
    if not 1 <= mc.memory_top_k <= mc.memory_size:
      raise UserError(f"config.model.memory_top_k: {mc.memory_top_k} not in 1..memory_size={mc.memory_size}")
    if not 1 <= mc.expert_top_k <= mc.num_experts:
      raise UserError(f"config.model.expert_top_k: {mc.expert_top_k} not in 1..num_experts={mc.num_experts}")
    if not 0.0 < mc.memory_alpha <= 1.0:
      raise UserError(f"config.model.memory_alpha: {mc.memory_alpha} not in (0, 1]")
    mrffn = functools.partial(
      MRFFN,
      hidden_size(cfg),
      memory_size=mc.memory_size,
      key_dim=mc.memory_key_dim,
      top_k=mc.memory_top_k,
      tau=mc.memory_tau,
      alpha=mc.memory_alpha,
      reseed_after=mc.memory_reseed_after,
      num_experts=mc.num_experts,
      expert_top_k=mc.expert_top_k,
      expert_hidden=mc.expert_hidden,
      aux_weight=mc.moe_aux_weight,
      dtype=cfg.compute_dtype,
      expert_kernel=kernels.experts,
    )
  warn_if_random(mc)
  return STLink(
    llm=cfg,
    num_nodes=spec.num_nodes,
    output_len=spec.output_len,
    in_channels=spec.in_channels,
    out_channels=spec.out_channels,
    input_offsets=tuple(int(o) for o in spec.input_offsets),
    steps_per_day=spec.steps_per_day,
    patch_len=mc.patch_len,
    embed_dim=mc.embed_dim,
    node_init=node_init,
    se_attention=mc.se_attention,
    se_mode=mc.se_mode,
    temporal_dims=mc.temporal_dims,
    rope_base=mc.rope_base,
    mrffn_layers=resolve_mrffn_layers(mc) if mc.mrffn else (),
    mrffn=mrffn,
    revin=mc.revin,
    revin_affine=mc.revin_affine,
  )
