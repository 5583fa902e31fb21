"""STH-SepNet: a frozen-LLM temporal stream and a hypergraph spatial stream, fused per node.

    pred, aux = model.apply(variables, batch, train=False)
    (pred, aux), state = model.apply(variables, batch, train=True, rngs={"dropout": key},
                                     mutable=["graph"])

batch["x"]: [B, T_in, N, C_in] scaled; the target channels are x's first C_out channels.
batch["tod"] [B, T_in], batch["dow"] [B, T_in]: read only when `calendar_dim > 0`.
pred: [B, T_out, N, C_out] scaled. aux: {"aux_loss": 0, "gamma": mean pairwise/hypergraph mix}.
The `graph` collection holds the KNN hyperedges and a step counter (see `stjax.graph.KNNHypergraph`).

Ablations are config: `use_llm=False` (w/o LLM: the spatial forecast alone), `use_spatial=False`
(the LLM forecast alone), `graph="static"` (MixProp on the dataset adjacency), `use_hypergraph=False`.
Not in the paper (docs/sth_sepnet.md, "Extra inputs"): `calendar_dim > 0` appends time-of-day and
day-of-week embeddings, `node_input_dim > 0` a learned per-node vector, to the spatial stream's
input channels.
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
from flax import linen as nn

from stjax.graph import EdgeList
from stjax.models.backbones import backbone_name, build_backbone, hidden_size
from stjax.models.embeddings import CalendarEmbedding, NodeEmbedding
from stjax.models.gpt2 import GPT2Config
from stjax.models.sth_sepnet.fusion import GATES
from stjax.models.sth_sepnet.spatial import SpatialStream
from stjax.models.sth_sepnet.temporal import TemporalStream

@dataclasses.dataclass(frozen=True)
class STHSepNetConfig:
  """The module's own fields; see `stjax.models.sth_sepnet.default_config` for their meaning.
  The language model's geometry arrives separately as a `GPT2Config` (`llm_config`)."""
  use_llm: bool = True
  lora_rank: int = 4
  lora_alpha: float = 4.0
  patch_len: int = 16
  stride: int = 8
  d_model: int = 768
  d_ff: int = 128
  n_heads: int = 8
  num_prototypes: int = 1000
  reprogramming: bool = True
  dropout: float = 0.1
  use_spatial: bool = True
  graph: str = "adaptive"
  use_hypergraph: bool = True
  hypergraph_conv: str = "hgat"
  num_layers: int = 3
  residual_channels: int = 32
  conv_channels: int = 32
  skip_channels: int = 64
  end_channels: int = 128
  node_dim: int = 40
  tanh_alpha: float = 3.0
  top_k: int = 20
  mixprop_depth: int = 2
  mixprop_beta: float = 0.05
  hyperedge_size: int = 3
  hypergraph_refresh: int = 100
  gamma_init: float = 0.5
  spatial_dropout: float = 0.3
  hypergraph_dropout: float = 0.2
  graph_block: int = 1024
  graph_refresh: int = 0
  fusion: str = "adaptive"
  fusion_hidden: int = 16
  calendar_dim: int = 0
  node_input_dim: int = 0


class STHSepNet(nn.Module):
  """See the module docstring. `llm_config`: the backbone (with LoRA) when `use_llm`;
  `static_graph`: the dataset adjacency for `graph="static"`; `steps_per_day`: rows of the
  time-of-day table (read only when `calendar_dim > 0`)."""
  config: STHSepNetConfig
  llm_config: GPT2Config | None
  num_nodes: int
  input_len: int
  output_len: int
  in_channels: int
  out_channels: int
  static_graph: EdgeList | None = None
  steps_per_day: int | None = None

  def setup(self):
    cfg = self.config
    if cfg.use_llm:
      family = backbone_name(self.llm_config)
      self.llm = build_backbone(family, self.llm_config)
      self.temporal = TemporalStream(
          self.llm, family, hidden_size(self.llm_config), self.output_len, cfg.patch_len,
          cfg.stride, cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.num_prototypes, cfg.reprogramming,
          cfg.dropout)
    if cfg.use_spatial:
      self.spatial = SpatialStream(
          self.num_nodes, self.output_len, self.out_channels, self.static_graph, cfg.num_layers,
          cfg.residual_channels, cfg.conv_channels, cfg.skip_channels, cfg.end_channels,
          cfg.node_dim, cfg.tanh_alpha, cfg.top_k, cfg.mixprop_depth, cfg.mixprop_beta,
          cfg.use_hypergraph, cfg.hypergraph_conv, cfg.hyperedge_size, cfg.hypergraph_refresh,
          cfg.gamma_init, cfg.spatial_dropout, cfg.hypergraph_dropout, cfg.graph_block,
          graph_refresh=cfg.graph_refresh)
      if cfg.calendar_dim:
        if not self.steps_per_day:
          raise ValueError("STHSepNet: calendar_dim > 0 needs steps_per_day (the data's DataSpec has it)")
        self.calendar = CalendarEmbedding(self.steps_per_day, cfg.calendar_dim)
      if cfg.node_input_dim:
        self.node_input = NodeEmbedding(self.num_nodes, cfg.node_input_dim)
    if cfg.use_llm and cfg.use_spatial:
      gate = GATES[cfg.fusion]
      self.fusion = gate() if cfg.fusion == "adaptive" else gate(cfg.fusion_hidden)

  def __call__(self, batch: dict[str, jax.Array], train: bool = False
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    cfg = self.config
    x = batch["x"]
    if x.shape[1:] != (self.input_len, self.num_nodes, self.in_channels):
      raise ValueError(f"STHSepNet: batch x has shape {x.shape}, expected "
                       f"[B, {self.input_len}, {self.num_nodes}, {self.in_channels}]")
    aux = {"aux_loss": jnp.zeros((), jnp.float32)}
    y_t = self.temporal(x[..., :self.out_channels], deterministic=not train) if cfg.use_llm else None
    y_s = None
    if cfg.use_spatial:
      y_s, logs = self.spatial(self._spatial_input(x, batch), train=train)
      aux.update(logs)
    if y_t is None:
      return y_s, aux
    if y_s is None:
      return y_t, aux
    return self.fusion(y_t.astype(y_s.dtype), y_s, train=train), aux

  def _spatial_input(self, x: jax.Array, batch: dict[str, jax.Array]) -> jax.Array:
    """x [B, T, N, C] -> [B, T, N, C + 2 calendar_dim + node_input_dim]: each step's time-of-day
    and day-of-week embeddings (the same for every node), then each node's own vector."""
    b, t, n, _ = x.shape
    extra = []
    if self.config.calendar_dim:
      tod, dow = self.calendar(batch["tod"], batch["dow"])  # [B, T, E] each
      cal = jnp.concatenate([tod, dow], -1)[:, :, None]  # [B, T, 1, 2E]
      extra.append(jnp.broadcast_to(cal, (b, t, n, cal.shape[-1])))
    if self.config.node_input_dim:
      extra.append(jnp.broadcast_to(self.node_input(), (b, t, n, self.config.node_input_dim)))
    return jnp.concatenate([x] + [e.astype(x.dtype) for e in extra], axis=-1) if extra else x
