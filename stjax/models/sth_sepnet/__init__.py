"""STH-SepNet (KDD 2025): LLM temporal stream + adaptive-hypergraph spatial stream + gated fusion.

`build(config.model, spec)` is registered as "sth_sepnet"; `default_config()` documents every
field (paper values). Design and departures from the released code: docs/sth_sepnet.md.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from stjax.errors import UserError
from stjax.graph import edge_list_from_dense
from stjax.models import pretrained
from stjax.models.backbones import hidden_size
from stjax.models.gpt2 import GPT2Config
from stjax.models.registry import register
from stjax.models.sth_sepnet.fusion import GATES
from stjax.models.sth_sepnet.model import STHSepNet, STHSepNetConfig
from stjax.models.sth_sepnet.temporal import num_patches

__all__ = ["STHSepNet", "STHSepNetConfig", "build", "default_config"]


def default_config() -> ml_collections.ConfigDict:
  """The model section of a config, with the paper's values (GPT-2 backbone)."""
  c = ml_collections.ConfigDict()
  c.name = "sth_sepnet"
  # --- temporal stream (LLM) ---
  c.use_llm = True                # False = "w/o LLM" ablation (spatial forecast only)
  c.pretrained = "gpt2"           # GPT-2 checkpoint (stjax folder, HF folder or hub id) merged into
                                  # params["llm"] by the trainer (stjax.models.pretrained);
                                  # "" = random LM (tests only; warns)
  c.backbone = "gpt2"             # "gpt2" | "llama" (Llama 3.2 1B geometry, llm_layers blocks;
                                  # GPT-2's geometry fields below then do not apply)
  c.llm_layers = 6                # GPT-2 blocks kept; never more than the pretrained depth (the
                                  # loader refuses; released scripts ask 32 of 12, see docs)
  c.vocab_size = 50257            # GPT-2 geometry; must match `pretrained` (checked on load)
  c.n_positions = 1024            # GPT-2 position-table size
  c.n_embd = 768                  # GPT-2 width d_llm
  c.n_head = 12                   # GPT-2 heads
  c.attention_dropout = 0.1       # dropout on GPT-2 attention probabilities
  c.dtype = "float32"             # GPT-2 compute dtype: "float32" | "bfloat16"
  c.lora_rank = 4                 # LoRA rank on attention and MLP projections (0 = none)
  c.lora_alpha = 4.0              # LoRA scale alpha / rank (4 / 4 = 1)
  c.patch_len = 16                # patch length (TimeLLM / released code)
  c.stride = 8                    # patch stride; the series is padded with `stride` copies of its end
  c.d_model = 768                 # patch-embedding width (released GPT-2 scripts: 768)
  c.d_ff = 128                    # LM features kept per patch token and reprogramming key width
                                  # (released: 128 METR/PEMS/BJ, 32 Bike)
  c.n_heads = 8                   # reprogramming heads
  c.num_prototypes = 1000         # text prototypes (Linear over the vocab axis of the token table)
  c.reprogramming = True          # False = Dense(d_model -> d_llm) instead of cross-attention
  c.dropout = 0.1                 # temporal-stream dropout (patch embedding, reprogramming, head)
                                  # and GPT-2 embedding/residual dropout
  # --- spatial stream (MTGNN style) ---
  c.use_spatial = True            # False = LLM forecast only
  c.graph = "adaptive"            # "adaptive" (MixProp on A and A^T) | "static" (MixProp on the
                                  # dataset adjacency, spec.adjacency)
  c.use_hypergraph = True         # x = gamma x1 + (1 - gamma) x2; False = x1 only (released Bike runs)
  c.hypergraph_conv = "hgat"      # "hgat" (released default) | "hgcn"
  c.num_layers = 3                # gated TCN + graph layers
  c.residual_channels = 32        # channels of the residual stream and graph convs
  c.conv_channels = 32            # dilated-inception channels (4 kernels x 8)
  c.skip_channels = 64            # skip-connection channels
  c.end_channels = 128            # hidden width of the output head
  c.node_dim = 40                 # node-embedding size of the adaptive graph and hypergraph
  c.tanh_alpha = 3.0              # saturation alpha of the MTGNN constructors
  c.top_k = 20                    # neighbours kept per row of the adaptive graph
  c.mixprop_depth = 2             # MixProp hops
  c.mixprop_beta = 0.05           # MixProp retain ratio of the input
  c.hyperedge_size = 3            # k of the KNN hyperedges (node itself included)
  c.hypergraph_refresh = 100      # training steps between rebuilds of the KNN hyperedges
  c.graph_refresh = 0             # training steps between re-selections of the adaptive graph's
                                  # top-k edges (all N^2 scores); 0 = hypergraph_refresh, 1 = every
                                  # call (MTGNN). Edge weights train every step either way
  c.gamma_init = 0.5              # initial gamma (1 pairwise only, 0.5 mix, 0 hypergraph only)
  c.spatial_dropout = 0.3         # dropout on the skip input and after each gated TCN
  c.hypergraph_dropout = 0.2      # HGAT attention dropout
  c.graph_block = 1024            # rows per block when selecting top-k / KNN (memory O(N * block))
  # --- fusion ---
  c.fusion = "adaptive"           # "adaptive" | "attention" | "lstm"
  c.fusion_hidden = 16            # hidden width of the attention and LSTM gates
  # --- extra spatial-stream inputs (not in the paper; docs/sth_sepnet.md "Extra inputs") ---
  c.calendar_dim = 0              # 0 = paper: no calendar input (the released prompt's timestamps
                                  # are sample 0's); > 0 = learned time-of-day and day-of-week
                                  # embeddings of this width appended to the spatial stream's
                                  # input channels (MTGNN/Graph WaveNet convention)
  c.node_input_dim = 0            # 0 = paper; > 0 = a learned vector of this width per node
                                  # appended to the same input channels (STID's node identity)
  return c


# Config fields that are not `STHSepNetConfig` fields: the name, and GPT-2's geometry and
# checkpoint (read by `stjax.models.pretrained`, shared with the other LLM models).
_LLM_FIELDS = ("backbone", "llm_layers", "vocab_size", "n_positions", "n_embd", "n_head", "attention_dropout",
               "dtype", "pretrained")
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
    bad("name", f"sth_sepnet reads its targets from x's first channels, but out_channels="
        f"{spec.out_channels} > in_channels={spec.in_channels}")
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
def build(model_config, spec) -> STHSepNet:
  """The STH-SepNet module for a dataset of shape `spec` (a `stjax.data.windows.DataSpec`)."""
  cfg = config_from(model_config)
  llm = None
  if cfg.use_llm:
    pretrained.warn_if_random(model_config)
    if cfg.lora_rank < 0:
      raise UserError(f"config.model.lora_rank: must be >= 0, got {cfg.lora_rank}")
    llm = pretrained.backbone_config(model_config, causal=True, use_wpe=True).replace(
        lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha)
  _check(cfg, llm, spec)
  static = None
  if cfg.use_spatial and cfg.graph == "static":
    static = edge_list_from_dense(spec.adjacency, "config.data.graph_path (adjacency)")
  return STHSepNet(cfg, llm, spec.num_nodes, spec.input_len, spec.output_len, spec.in_channels,
                   spec.out_channels, static, spec.steps_per_day)
