"""The official STH-SepNet state dict: its geometry and the name/layout table into stjax params.

The official `run_main.py` saves `torch.save(model.state_dict())` of `models/ST_SepNet.py Model`
(github jiawenchen10/ST-SepNet e1b4a02). Every key is either one stjax leaf (`Entry`) or in
`IGNORED` with the reason; anything else is refused. Layouts (all exact; torch Linear/Conv
weights are [out, in, ...], stjax Dense kernels [in, out]):

    patch_embedding.value_embedding.tokenConv.weight [d_model, patch_len, 3]  -> Conv [3, patch_len, d_model]
    mapping_layer [K, vocab], reprogramming_layer.* , gate_linear [N, 2N]      -> Dense (transpose)
    output_projection.linear.weight [T_out, d_ff * P], column f * P + p        -> head rows p * d_ff + f
    llm_model.*  (bare GPT2Model; GPT-2 Conv1D is [in, out] already)          -> llm/* (hf_gpt2 table)
    sthgnn.start_conv, gconv{1,2}.i.mlp.mlp, end_conv_{1,2}  1x1 Conv2d       -> Dense (w[:, :, 0, 0].T)
    sthgnn.{filter,gate}_convs.i.tconv.j [8, C, 1, k], skip0 / skip_convs.i / skipE [S, C, 1, L]
                                                                              -> Dense rows t * C + c
    sthgnn.norm.i.{weight,bias} [C, N, T_i]                                  -> norm_i [N, T_i, C]
    sthgnn.gc.*  (adaptive graph), sthgnn.hgc.* (hypergraph), sthgnn.gamma (one, shared)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

from stjax.convert import hf_gpt2, official_st_llm
from stjax.data.windows import DataSpec
from stjax.errors import UserError
from stjax.models.backbones.config import LLM_KEY
from stjax.models.backbones.gpt2 import GPT2Config

LLM = "llm_model."
SPATIAL = "sthgnn."
INCEPTION = (2, 3, 6, 7)  # the released dilated inception's kernels (hard-coded there)
# Checkpoint keys with no stjax leaf, and why. `word_embeddings` is checked equal to the GPT-2 wte.
IGNORED = (
  (re.compile(r"^(mtgnn|stmodel|gcn|attention_gate|lstm_gate)\."), "modules built but unused by the forward"),
  (re.compile(r"^sthgnn\.(alpha|beta|theta)$"), "created, never used"),
  (re.compile(r"^sthgnn\.(residual_convs|gconv3)\."), "used only without the GCN / by the static variant"),
  (re.compile(r"^llm_model\.h\.\d+\.attn\.(bias|masked_bias)$"), "causal-mask buffers of older transformers"),
  (re.compile(r"^word_embeddings$"), "a second name of llm_model.wte.weight"),
)
HYPERGRAPH_KEYS = re.compile(r"^sthgnn\.(hgc\.|gamma$)")  # unused when the hypergraph is off
_ANCHORS = {  # tensors the geometry is read from, and their number of dimensions
  "gate_linear.weight": 2,
  "patch_embedding.value_embedding.tokenConv.weight": 3,
  "mapping_layer.weight": 2,
  "reprogramming_layer.query_projection.weight": 2,
  "output_projection.linear.weight": 2,
  LLM + "wte.weight": 2,
  LLM + "wpe.weight": 2,
  LLM + "h.0.mlp.c_fc.weight": 2,
  SPATIAL + "start_conv.weight": 4,
  SPATIAL + "skip0.weight": 4,
  SPATIAL + "end_conv_1.weight": 4,
  SPATIAL + "end_conv_2.weight": 4,
  SPATIAL + "gc.emb1.weight": 2,
  SPATIAL + "gconv1.0.mlp.mlp.weight": 4,
  SPATIAL + "filter_convs.0.tconv.0.weight": 4,
}
_OTHER_LLMS = {
  LLM + "embeddings.word_embeddings.weight": "BERT",
  LLM + "embeddings.word_embeddings.original_layer.weight": "BERT",
  LLM + "embed_tokens.weight": "LLaMA / Qwen",
}
_HF_GPT2 = re.compile(r"^(transformer\.)?(wte|wpe|ln_f|h\.\d+\.(ln_1|ln_2|attn|mlp))\.|^lm_head\.weight$")

Hook = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Sizes an official checkpoint implies (from tensor shapes; `stride` and `hyperedge_size`
  are not stored and come from the caller, defaults = the released scripts')."""

  num_nodes: int  # N: gate_linear rows
  seq_len: int  # T_in = T_out (the released spatial stream forecasts seq_len steps)
  patch_len: int  # tokenConv input channels
  stride: int  # not stored (released default 8)
  d_model: int  # tokenConv output channels
  d_ff: int  # LM features per patch token = reprogramming key width
  n_heads: int  # reprogramming heads
  num_prototypes: int  # mapping_layer rows (1000)
  n_embd: int  # GPT-2 width
  vocab_size: int
  n_positions: int
  llm_layers: int  # GPT-2 blocks
  num_layers: int  # spatial layers
  residual_channels: int
  conv_channels: int
  skip_channels: int
  end_channels: int
  node_dim: int
  mixprop_depth: int
  hyperedge_size: int  # not stored (scale_hyperedges, released scripts 3)

  @property
  def num_patches(self) -> int:
    return (self.seq_len + self.stride - self.patch_len) // self.stride + 1

  @property
  def window(self) -> int:
    """Time steps the spatial stream's first layer sees: T_in, left-padded to the receptive field."""
    return max(self.seq_len, 1 + self.num_layers * (max(INCEPTION) - 1))

  def gpt2_config(self) -> GPT2Config:
    return GPT2Config(
      vocab_size=self.vocab_size,
      n_positions=self.n_positions,
      n_embd=self.n_embd,
      n_layer=self.llm_layers,
      n_head=1,
    )

  def check_spec(self, spec, where: str = "data") -> None:
    """UserError when a dataset's DataSpec cannot feed this checkpoint (N, T_in = T_out, one channel)."""
    want = {
      "num_nodes": self.num_nodes,
      "input_len": self.seq_len,
      "output_len": self.seq_len,
      "in_channels": 1,
      "out_channels": 1,
    }
    for field, value in want.items():
      if getattr(spec, field) != value:
        raise UserError(
          f"{where}: {field} is {getattr(spec, field)} but the official checkpoint was trained with {value}"
        )

  def data_spec(self):
    """A stjax DataSpec of this shape (one input and target channel, no adjacency)."""
    return DataSpec(
      num_nodes=self.num_nodes,
      input_len=self.seq_len,
      output_len=self.seq_len,
      in_channels=1,
      out_channels=1,
      input_offsets=tuple(range(1 - self.seq_len, 1)),
      output_offsets=tuple(range(1, self.seq_len + 1)),
      steps_per_day=288,  # unused: the released model has no calendar input
      adjacency=None,
      channel_names=("value",),
    )


class Entry(NamedTuple):
  """One tensor: official key, stjax path (under params), official shape, layout hook."""

  official: str
  path: tuple[str, ...]
  shape: tuple[int, ...]
  to_stjax: Hook


def _copy(x: np.ndarray) -> np.ndarray:
  return np.array(x, order="C")  # (np.ascontiguousarray would turn the 0-d gamma into [1])


def _linear(w: np.ndarray) -> np.ndarray:
  """torch Linear [out, in] -> Dense kernel [in, out]."""
  return np.ascontiguousarray(w.T)


def _conv1x1(w: np.ndarray) -> np.ndarray:
  """Conv2d (out, in, 1, 1) -> Dense kernel [in, out]."""
  return np.ascontiguousarray(w[:, :, 0, 0].T)


def _conv_over_time(w: np.ndarray) -> np.ndarray:
  """Conv2d (out, C, 1, L) over a time window -> Dense kernel [L * C, out], row t * C + c."""
  out, c, _, length = w.shape
  return np.ascontiguousarray(w[:, :, 0, :].transpose(2, 1, 0).reshape(length * c, out))


def head_rows(d_ff: int, patches: int) -> np.ndarray:
  """perm[p * d_ff + f] = f * P + p: the official FlattenHead flattens (d_ff, P) feature-major."""
  return np.array([f * patches + p for p in range(patches) for f in range(d_ff)], np.int64)


def name_table(g: Geometry, hypergraph: bool = True) -> list[Entry]:
  """Every mapped tensor of a checkpoint of geometry `g` (`hypergraph`: sthgnn.hgc.* and
  sthgnn.gamma are used, i.e. the released `--hgcn_true`)."""
  n, p = g.num_nodes, g.num_patches
  perm = head_rows(g.d_ff, p)
  qk = g.d_ff * g.n_heads
  table = [
    Entry(
      "patch_embedding.value_embedding.tokenConv.weight",
      ("temporal", "patch_embedding", "kernel"),
      (g.d_model, g.patch_len, 3),
      lambda w: np.ascontiguousarray(w.transpose(2, 1, 0)),
    ),
    Entry(
      "mapping_layer.weight", ("temporal", "prototypes", "kernel"), (g.num_prototypes, g.vocab_size), _linear
    ),
    Entry("mapping_layer.bias", ("temporal", "prototypes", "bias"), (g.num_prototypes,), _copy),
  ]
  for ours, theirs, shape in (
    ("query", "query_projection", (qk, g.d_model)),
    ("key", "key_projection", (qk, g.n_embd)),
    ("value", "value_projection", (qk, g.n_embd)),
    ("out", "out_projection", (g.n_embd, qk)),
  ):
    table += [
      Entry(
        f"reprogramming_layer.{theirs}.weight", ("temporal", "reprogramming", ours, "kernel"), shape, _linear
      ),
      Entry(
        f"reprogramming_layer.{theirs}.bias", ("temporal", "reprogramming", ours, "bias"), shape[:1], _copy
      ),
    ]
  table += [
    Entry(
      "output_projection.linear.weight",
      ("temporal", "head", "kernel"),
      (g.seq_len, g.d_ff * p),
      lambda w: np.ascontiguousarray(w.T[perm]),
    ),
    Entry("output_projection.linear.bias", ("temporal", "head", "bias"), (g.seq_len,), _copy),
    Entry("gate_linear.weight", ("fusion", "gate", "kernel"), (n, 2 * n), _linear),
    Entry("gate_linear.bias", ("fusion", "gate", "bias"), (n,), _copy),
  ]
  cfg = g.gpt2_config()
  table += [
    Entry(LLM + hf, (LLM_KEY,) + path, rule.shape(cfg), _copy) for hf, path, rule in hf_gpt2.rules(cfg)
  ]
  return table + _spatial_table(g, hypergraph)


def _spatial_table(g: Geometry, hypergraph: bool) -> list[Entry]:
  s, r, c, k = SPATIAL, g.residual_channels, g.conv_channels, g.skip_channels

  def conv(official, ours, shape, hook):
    return [
      Entry(f"{s}{official}.weight", ("spatial", ours, "kernel"), shape, hook),
      Entry(f"{s}{official}.bias", ("spatial", ours, "bias"), shape[:1], _copy),
    ]

  table = conv("start_conv", "start", (r, 1, 1, 1), _conv1x1)
  table += conv("skip0", "skip_0", (k, 1, 1, g.window), _conv_over_time)
  for i in range(g.num_layers):
    steps = g.window - (max(INCEPTION) - 1) * (i + 1)
    for official, ours in (("filter_convs", "filter"), ("gate_convs", "gate")):
      for j, kernel in enumerate(INCEPTION):
        table += [
          Entry(
            f"{s}{official}.{i}.tconv.{j}.weight",
            ("spatial", f"{ours}_{i}", f"conv_{kernel}", "kernel"),
            (c // len(INCEPTION), r, 1, kernel),
            _conv_over_time,
          ),
          Entry(
            f"{s}{official}.{i}.tconv.{j}.bias",
            ("spatial", f"{ours}_{i}", f"conv_{kernel}", "bias"),
            (c // len(INCEPTION),),
            _copy,
          ),
        ]
    table += conv(f"skip_convs.{i}", f"skip_{i + 1}", (k, c, 1, steps), _conv_over_time)
    hops = (g.mixprop_depth + 1) * c
    table += conv(f"gconv1.{i}.mlp.mlp", f"mixprop_{i}/mlp", (r, hops, 1, 1), _conv1x1)
    table += conv(f"gconv2.{i}.mlp.mlp", f"mixprop_t_{i}/mlp", (r, hops, 1, 1), _conv1x1)
    for official, ours in (("weight", "scale"), ("bias", "bias")):
      table.append(
        Entry(
          f"{s}norm.{i}.{official}",
          ("spatial", f"norm_{i}", ours),
          (r, g.num_nodes, steps),
          lambda w: np.ascontiguousarray(w.transpose(1, 2, 0)),
        )
      )
  last = g.window - (max(INCEPTION) - 1) * g.num_layers
  table += conv("skipE", "skip_end", (k, r, 1, last), _conv_over_time)
  table += conv("end_conv_1", "end_1", (g.end_channels, k, 1, 1), _conv1x1)
  table += conv("end_conv_2", "end_2", (g.seq_len, g.end_channels, 1, 1), _conv1x1)
  d, n = g.node_dim, g.num_nodes
  table += [
    Entry(f"{s}gc.emb1.weight", ("spatial", "adaptive_graph", "emb1"), (n, d), _copy),
    Entry(f"{s}gc.emb2.weight", ("spatial", "adaptive_graph", "emb2"), (n, d), _copy),
  ]
  for lin in ("lin1", "lin2"):
    table += [
      Entry(f"{s}gc.{lin}.weight", ("spatial", "adaptive_graph", lin, "kernel"), (d, d), _linear),
      Entry(f"{s}gc.{lin}.bias", ("spatial", "adaptive_graph", lin, "bias"), (d,), _copy),
    ]
  if hypergraph:
    table += [
      Entry(f"{s}gamma", ("spatial", "gamma"), (), _copy),
      Entry(f"{s}hgc.emb1.weight", ("spatial", "hypergraph", "emb"), (n, d), _copy),
      Entry(f"{s}hgc.lin1.weight", ("spatial", "hypergraph", "lin", "kernel"), (d, d), _linear),
      Entry(f"{s}hgc.lin1.bias", ("spatial", "hypergraph", "lin", "bias"), (d,), _copy),
    ]
  # paths given as "a/b" above are nested params
  return [e._replace(path=tuple(x for part in e.path for x in part.split("/"))) for e in table]


def _shapes(tensors: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
  return {k: tuple(np.shape(v)) for k, v in tensors.items()}


def check_kind(tensors: Mapping[str, np.ndarray], source: str) -> None:
  """UserError when the state dict is not an official STH-SepNet one with a GPT-2 LLM."""
  keys = list(tensors)
  if not keys:
    raise UserError(f"{source}: empty state dict")
  if "node_emb" in tensors or any(k.startswith("gpt.gpt2.") for k in keys):
    raise UserError(
      f"{source}: this is an official ST-LLM checkpoint (node_emb, gpt.gpt2.*), not STH-SepNet; "
      "import it with stjax.convert.official_st_llm"
    )
  if not any(k.startswith((LLM, SPATIAL)) for k in keys):
    if any(_HF_GPT2.match(k) for k in keys):
      raise UserError(
        f"{source}: this is a GPT-2 (Hugging Face) checkpoint, not an official STH-SepNet state dict"
      )
    raise UserError(
      f"{source}: not an official STH-SepNet state dict (no {LLM}* or {SPATIAL}* tensors; first key {keys[0]!r})"
    )
  for key, family in _OTHER_LLMS.items():
    if key in tensors:
      raise UserError(
        f"{source}: its LLM is {family} ({key}); this importer reads STH-SepNet checkpoints with GPT-2 only"
      )


def infer_geometry(
  tensors: Mapping[str, np.ndarray], source: str, *, stride: int = 8, hyperedge_size: int = 3
) -> Geometry:
  """The geometry an official state dict implies; UserError (one line) otherwise."""
  check_kind(tensors, source)
  for key in _ANCHORS:
    if key not in tensors:
      raise UserError(f"{source}: missing tensor {key}")
  shape = _shapes({k: tensors[k] for k in _ANCHORS})
  keys = list(tensors)
  for key, ndim in _ANCHORS.items():
    if len(shape[key]) != ndim:
      raise UserError(f"{source}: tensor {key} has shape {shape[key]}, expected {ndim} dimensions")

  def bad(key, why):
    raise UserError(f"{source}: tensor {key} has shape {shape.get(key, np.shape(tensors[key]))}; {why}")

  n = shape["gate_linear.weight"][0]
  d_model, patch_len, _ = shape["patch_embedding.value_embedding.tokenConv.weight"]
  vocab, width = shape[LLM + "wte.weight"]
  seq_len, head_width = shape["output_projection.linear.weight"]
  qk = shape["reprogramming_layer.query_projection.weight"][0]
  if stride < 1:
    raise UserError(f"stride: must be >= 1, got {stride}")
  patches = (seq_len + stride - patch_len) // stride + 1
  if patches < 1 or head_width % patches:
    bad(
      "output_projection.linear.weight",
      f"not d_ff x {patches} patches of stride {stride}; pass the run's stride",
    )
  d_ff = head_width // patches
  if qk % d_ff:
    bad("reprogramming_layer.query_projection.weight", f"not n_heads x d_ff = {d_ff}; pass the run's stride")
  if not 1 <= d_ff <= width:
    bad("output_projection.linear.weight", f"implies d_ff {d_ff}, not in [1, GPT-2 width {width}]")
  if shape[LLM + "h.0.mlp.c_fc.weight"][1] != 4 * width:
    bad(LLM + "h.0.mlp.c_fc.weight", f"stjax's GPT-2 has MLP width 4 x {width}")
  residual, in_dim = shape[SPATIAL + "start_conv.weight"][:2]
  if in_dim != 1:
    bad(SPATIAL + "start_conv.weight", "the released spatial stream has one input channel")
  if shape[SPATIAL + "end_conv_2.weight"][0] != seq_len:
    bad(SPATIAL + "end_conv_2.weight", f"the released code needs pred_len = seq_len = {seq_len}")
  layers = sorted({int(m.group(1)) for k in keys if (m := re.match(r"^sthgnn\.filter_convs\.(\d+)\.", k))})
  if not layers or layers != list(range(len(layers))):
    raise UserError(f"{source}: sthgnn.filter_convs layers {layers} are not numbered 0..L-1")
  blocks = sorted({int(m.group(1)) for k in keys if (m := re.match(r"^llm_model\.h\.(\d+)\.", k))})
  if blocks != list(range(len(blocks))):
    raise UserError(f"{source}: GPT-2 blocks {blocks} are not numbered 0..{len(blocks) - 1}")
  conv_channels = shape[SPATIAL + "filter_convs.0.tconv.0.weight"][0] * len(INCEPTION)
  hops = shape[SPATIAL + "gconv1.0.mlp.mlp.weight"][1]
  if hops % conv_channels or hops // conv_channels < 2:
    bad(SPATIAL + "gconv1.0.mlp.mlp.weight", f"not (depth + 1) x {conv_channels} MixProp inputs")
  if not 1 <= hyperedge_size <= n:
    raise UserError(f"hyperedge_size: must be in [1, {n}], got {hyperedge_size}")
  return Geometry(
    num_nodes=n,
    seq_len=seq_len,
    patch_len=patch_len,
    stride=stride,
    d_model=d_model,
    d_ff=d_ff,
    n_heads=qk // d_ff,
    num_prototypes=shape["mapping_layer.weight"][0],
    n_embd=width,
    vocab_size=vocab,
    n_positions=shape[LLM + "wpe.weight"][0],
    llm_layers=len(blocks),
    num_layers=len(layers),
    residual_channels=residual,
    conv_channels=conv_channels,
    skip_channels=shape[SPATIAL + "skip0.weight"][0],
    end_channels=shape[SPATIAL + "end_conv_1.weight"][0],
    node_dim=shape[SPATIAL + "gc.emb1.weight"][1],
    mixprop_depth=hops // conv_channels - 1,
    hyperedge_size=hyperedge_size,
  )


def ignored_reason(key: str, hypergraph: bool) -> str | None:
  """Why `key` has no stjax leaf, or None when it should have one."""
  for pattern, why in IGNORED:
    if pattern.match(key):
      return why
  if not hypergraph and HYPERGRAPH_KEYS.match(key):
    return "the hypergraph is off (the released Bike runs)"
  return None


def check_table(tensors: Mapping[str, np.ndarray], table: list[Entry], source: str, hypergraph: bool) -> None:
  """Every key mapped or ignored with a reason, every entry present with its shape and a float dtype."""
  official_st_llm.check_table(
    tensors, table, source, lambda key: ignored_reason(key, hypergraph) is not None, "STH-SepNet"
  )
  if "word_embeddings" in tensors:
    same = np.shape(tensors["word_embeddings"]) == np.shape(tensors[LLM + "wte.weight"]) and np.array_equal(
      np.asarray(tensors["word_embeddings"], np.float32), np.asarray(tensors[LLM + "wte.weight"], np.float32)
    )
    if not same:
      raise UserError(
        f"{source}: word_embeddings differs from {LLM}wte.weight (the same tensor in the official model)"
      )
