"""STH-SepNet: a frozen-LLM temporal stream and a hypergraph spatial stream, fused per node.

    pred, aux = model.apply(variables, batch, train=False)
    (pred, aux), state = model.apply(variables, batch, train=True, rngs={"dropout": key},
                                     mutable=["graph"])

batch["x"]: [B, T_in, N, C_in] scaled; the target channels are x's first C_out channels.
batch["tod"] [B, T_in], batch["dow"] [B, T_in]: read only when `calendar_dim > 0`.
batch["prompt_ids"] [B, L] int (optional): token ids of a text prompt, embedded with the LM's
token table and put before the patch tokens (the released code's prompt; none by default).
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
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from stjax.errors import UserError
from stjax.graph import EdgeList, edge_list_from_dense
from stjax.kernels import Kernels
from stjax.layers.embeddings import CalendarEmbedding, NodeEmbedding
from stjax.models.backbones import backbone_name, build_backbone, hidden_size
from stjax.models.backbones.config import backbone_config, warn_if_random
from stjax.models.backbones.gpt2 import GPT2Config
from stjax.models.registry import register
from stjax.models.sth_sepnet.fusion import GATES
from stjax.models.sth_sepnet.spatial import SpatialStream
from stjax.models.sth_sepnet.temporal import TemporalStream, num_patches


@dataclasses.dataclass(frozen=True)
class STHSepNetConfig:
  """The module's own fields, all from `config.model`: their defaults and meaning are in
  `stjax.models.sth_sepnet.config.default_config` (one place).
  The language model's geometry arrives separately as its backbone config (`llm_config`: a
  `GPT2Config`, `LlamaConfig` or `BertConfig`)."""

  use_llm: bool
  lora_rank: int
  lora_alpha: float
  patch_len: int
  stride: int
  d_model: int
  d_ff: int
  n_heads: int
  num_prototypes: int
  reprogramming: bool
  dropout: float
  use_spatial: bool
  graph: str
  use_hypergraph: bool
  hypergraph_conv: str
  num_layers: int
  residual_channels: int
  conv_channels: int
  skip_channels: int
  end_channels: int
  node_dim: int
  tanh_alpha: float
  top_k: int
  mixprop_depth: int
  mixprop_beta: float
  hyperedge_size: int
  hypergraph_refresh: int
  gamma_init: float
  spatial_dropout: float
  hypergraph_dropout: float
  graph_block: int
  graph_refresh: int
  fusion: str
  fusion_hidden: int
  calendar_dim: int
  node_input_dim: int
  spatial_variant: str = "stjax"
  remat: str = "none"  # spatial layers rematerialised (backbones.decoder.remat_policy); the LLM
  # blocks read the same field from the backbone config


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
  kernels: Kernels = Kernels()

  def setup(self):
    cfg = self.config
    if cfg.use_llm:
      family = backbone_name(self.llm_config)
      self.llm = build_backbone(family, self.llm_config)
      self.temporal = TemporalStream(
        self.llm,
        family,
        hidden_size(self.llm_config),
        self.output_len,
        cfg.patch_len,
        cfg.stride,
        cfg.d_model,
        cfg.d_ff,
        cfg.n_heads,
        cfg.num_prototypes,
        cfg.reprogramming,
        cfg.dropout,
      )
    if cfg.use_spatial:
      self.spatial = SpatialStream(
        cfg, self.num_nodes, self.output_len, self.out_channels, self.static_graph, self.kernels.leading_sum
      )
      if cfg.calendar_dim:
        if not self.steps_per_day:
          raise ValueError("STHSepNet: calendar_dim > 0 needs steps_per_day (the data's DataSpec has it)")
        self.calendar = CalendarEmbedding(self.steps_per_day, cfg.calendar_dim)
      if cfg.node_input_dim:
        self.node_input = NodeEmbedding(self.num_nodes, cfg.node_input_dim)
    if cfg.use_llm and cfg.use_spatial:
      gate = GATES[cfg.fusion]
      self.fusion = gate() if cfg.fusion in ("adaptive", "released") else gate(cfg.fusion_hidden)

  def __call__(
    self, batch: dict[str, jax.Array], train: bool = False
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    cfg = self.config
    x = batch["x"]
    if x.shape[1:] != (self.input_len, self.num_nodes, self.in_channels):
      raise ValueError(
        f"STHSepNet: batch x has shape {x.shape}, expected "
        f"[B, {self.input_len}, {self.num_nodes}, {self.in_channels}]"
      )
    aux = {"aux_loss": jnp.zeros((), jnp.float32)}
    y_t = None
    if cfg.use_llm:
      y_t = self.temporal(x[..., : self.out_channels], not train, batch.get("prompt_ids"))
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


# Config fields that are not `STHSepNetConfig` fields: the name, and GPT-2's geometry and
# checkpoint (read by `stjax.models.backbones.config`, shared with the other LLM models).
_LLM_FIELDS = (
  "backbone",
  "llm_layers",
  "vocab_size",
  "n_positions",
  "n_embd",
  "n_head",
  "attention_dropout",
  "dtype",
  "pretrained",
)
_NOT_MODULE_FIELDS = ("name",) + _LLM_FIELDS


def _check(cfg: STHSepNetConfig, llm: GPT2Config | None, spec) -> None:
  def bad(field, why):
    raise UserError(f"config.model.{field}: {why}")

  if not (cfg.use_llm or cfg.use_spatial):
    bad("use_llm", "use_llm and use_spatial are both False; nothing would predict")
  if cfg.fusion not in GATES:
    bad("fusion", f"unknown {cfg.fusion!r}; known: {', '.join(GATES)}")
  if cfg.graph not in ("adaptive", "static"):
    bad("graph", f"must be 'adaptive' or 'static', got {cfg.graph!r}")
  if cfg.hypergraph_conv not in ("hgat", "hgcn"):
    bad("hypergraph_conv", f"must be 'hgat' or 'hgcn', got {cfg.hypergraph_conv!r}")
  if cfg.spatial_variant not in ("stjax", "released"):
    bad("spatial_variant", f"must be 'stjax' or 'released', got {cfg.spatial_variant!r}")
  if cfg.spatial_variant == "released" and cfg.use_hypergraph and cfg.hypergraph_conv != "hgat":
    bad("hypergraph_conv", "the released spatial stream has only 'hgat' (what every released script runs)")
  if cfg.graph == "static" and cfg.use_spatial and spec.adjacency is None:
    bad("graph", "'static' needs a dataset adjacency (config.data.graph_path), and there is none")
  if cfg.conv_channels % 4:
    bad("conv_channels", f"must be divisible by 4 (one share per inception kernel), got {cfg.conv_channels}")
  if cfg.hypergraph_refresh < 1:
    bad("hypergraph_refresh", f"must be >= 1, got {cfg.hypergraph_refresh}")
  if cfg.graph_refresh < 0:
    bad("graph_refresh", f"must be >= 0 (0 = hypergraph_refresh), got {cfg.graph_refresh}")
  if not 1 <= cfg.hyperedge_size <= spec.num_nodes:
    bad("hyperedge_size", f"must be in [1, {spec.num_nodes}], got {cfg.hyperedge_size}")
  for field in ("calendar_dim", "node_input_dim"):
    if getattr(cfg, field) < 0:
      bad(field, f"must be >= 0 (0 = off), got {getattr(cfg, field)}")
    if getattr(cfg, field) and not cfg.use_spatial:
      bad(field, "feeds the spatial stream, which use_spatial=False removes")
  if cfg.top_k < 1:
    bad("top_k", f"must be >= 1, got {cfg.top_k}")
  if spec.out_channels > spec.in_channels:
    bad(
      "name",
      f"sth_sepnet reads its targets from x's first channels, but out_channels="
      f"{spec.out_channels} > in_channels={spec.in_channels}",
    )
  if llm is not None:
    width = hidden_size(llm)
    if not 1 <= cfg.d_ff <= width:
      bad("d_ff", f"must be in [1, LM width {width}], got {cfg.d_ff}")
    if num_patches(spec.input_len, cfg.patch_len, cfg.stride) < 1:
      bad("patch_len", f"{cfg.patch_len} is longer than the padded input ({spec.input_len} + {cfg.stride})")


def config_from(model_config) -> STHSepNetConfig:
  """ConfigDict / mapping -> the frozen module config; unknown fields are a UserError."""
  fields = dict(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config)
  for name in _NOT_MODULE_FIELDS:
    fields.pop(name, None)
  known = {f.name for f in dataclasses.fields(STHSepNetConfig)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise UserError(f"config.model: unknown sth_sepnet field(s) {', '.join(unknown)}")
  return STHSepNetConfig(**fields)


@register("sth_sepnet")
def build(model_config, spec, kernels: Kernels = Kernels(), pretrained_config: Any = None) -> STHSepNet:
  """The STH-SepNet module for a dataset of shape `spec` (a `stjax.data.windows.DataSpec`), with
  the run's resolved `kernels` and the pretrained backbone's config (Llama geometry) if any."""
  cfg = config_from(model_config)
  llm = None
  if cfg.use_llm:
    warn_if_random(model_config)
    if cfg.lora_rank < 0:
      raise UserError(f"config.model.lora_rank: must be >= 0, got {cfg.lora_rank}")
    llm = backbone_config(
      model_config, causal=True, use_wpe=True, kernels=kernels, pretrained_config=pretrained_config
    ).replace(lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha)
  _check(cfg, llm, spec)
  static = None
  if cfg.use_spatial and cfg.graph == "static":
    static = edge_list_from_dense(spec.adjacency, "config.data.graph_path (adjacency)")
  return STHSepNet(
    cfg,
    llm,
    spec.num_nodes,
    spec.input_len,
    spec.output_len,
    spec.in_channels,
    spec.out_channels,
    static,
    spec.steps_per_day,
    kernels,
  )
