"""Official STH-SepNet checkpoints (github jiawenchen10/ST-SepNet, `checkpoint`) -> stjax STH-SepNet.

    model_config, params, model_state = import_sth_sepnet("checkpoint")
    imported = load("checkpoint", min_values=..., max_values=...)   # + geometry, notes
    model = build_model(imported.model_config, imported.geometry.data_spec())
    pred, _ = model.apply({"params": params, **model_state}, batch)

`python -m stjax.convert import-sth-sepnet` writes the import as a stjax run folder (scaler,
protocol, checkpoint: `stjax.train.run_convert.import_sth_sepnet_run`); this module only reads.

The imported model is `spatial_variant = "released"`, `fusion = "released"` (the released code's
spatial stream and node-axis gate; stjax.models.sth_sepnet.released), GPT-2 without LoRA (the
released LoRA never wraps GPT-2's Conv1D), `graph_refresh = 1` (top-k every call, as released).
The name map and layouts: `stjax.convert.official_sth_sepnet_table`. `model_state` is the
`bounds` collection: the per-node clamp of the released gate (the training data's min/max, not in
the checkpoint: pass `min_values`/`max_values` or use `with_bounds`, else no clamp).

Not importable, because the checkpoint does not hold it: the released HGAT (the default
`--adaptive_hyperhgnn hgat`) is created inside `forward` with fresh random weights on every call;
the imported model draws them the same way, or replays recorded ones (`variables["hgat"]`, see
`stjax.models.sth_sepnet.released.hgat_collection`); `hypergraph=False` imports the deterministic
GNN-only model (the released Bike runs). The LLM prompt is an input (`batch["prompt_ids"]`,
`stjax.convert.official_sth_sepnet_prompt`). Reading never executes pickled code (weights_io).
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import ml_collections
import numpy as np

from stjax.convert import weights_io
from stjax.convert.hf_common import set_path
from stjax.convert.official_st_llm import GPT2_WIDTHS, default_n_head
from stjax.convert.official_sth_sepnet_table import (
  Geometry,
  check_table,
  ignored_reason,
  infer_geometry,
  name_table,
)
from stjax.errors import UserError
from stjax.graph.adaptive import MTGNN_TOP_K
from stjax.models.sth_sepnet import default_config

NO_CLAMP = "not in the checkpoint: the output clamp (training min/max per node); no clamp applied"


class Imported(NamedTuple):
  model_config: ml_collections.ConfigDict
  params: dict
  model_state: dict
  geometry: Geometry
  notes: tuple[str, ...]  # what was not imported, and why (one line each)


# ----------------------------------------------------------------------------------------------
# Reading (no code execution)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The official `checkpoint` (a torch zip of the state dict) -> {key: NumPy array}, file order."""
  path = pathlib.Path(path).expanduser()
  if path.is_dir():
    raise UserError(f"{path}: expected the official STH-SepNet checkpoint file, found a folder")
  if not path.is_file():
    raise UserError(f"{path}: no such file")
  state = weights_io.read_torch_checkpoint(path)
  out: dict[str, np.ndarray] = collections.OrderedDict()
  for key, value in state.items():
    if not isinstance(value, np.ndarray):
      kind = "a nested dict (not model.state_dict())" if isinstance(value, Mapping) else type(value).__name__
      raise UserError(f"{path}: entry {key!r} is {kind}; expected a state dict of tensors")
    out[str(key)] = value
  if not out:
    raise UserError(f"{path}: empty state dict")
  return out


# ----------------------------------------------------------------------------------------------
# Official state dict -> stjax


def model_config(
  geometry: Geometry, *, n_head: int | None = None, hypergraph: bool = True, gamma: float = 0.5
):
  """`config.model` (stjax.models.sth_sepnet.default_config fields) of an imported checkpoint."""
  g = geometry
  n_head = default_n_head(g.n_embd) if n_head is None else int(n_head)
  if n_head < 1 or g.n_embd % n_head:
    raise UserError(f"n_head: {n_head} does not divide the GPT-2 width {g.n_embd}")
  c = default_config()
  c.update(
    pretrained="",  # the params are complete
    backbone="gpt2",
    llm_layers=g.llm_layers,
    vocab_size=g.vocab_size,
    n_positions=g.n_positions,
    n_embd=g.n_embd,
    n_head=n_head,
    dtype="float32",
    lora_rank=0,  # released: GPT-2's Conv1D is never LoRA-wrapped
    patch_len=g.patch_len,
    stride=g.stride,
    d_model=g.d_model,
    d_ff=g.d_ff,
    n_heads=g.n_heads,
    num_prototypes=g.num_prototypes,
    reprogramming=True,
    use_llm=True,
    use_spatial=True,
    graph="adaptive",
    use_hypergraph=hypergraph,
    hypergraph_conv="hgat",
    num_layers=g.num_layers,
    residual_channels=g.residual_channels,
    conv_channels=g.conv_channels,
    skip_channels=g.skip_channels,
    end_channels=g.end_channels,
    node_dim=g.node_dim,
    tanh_alpha=3.0,  # hard-coded in the released Model
    top_k=MTGNN_TOP_K,  # subgraph_size, hard-coded (20)
    mixprop_depth=g.mixprop_depth,
    mixprop_beta=0.05,  # propalpha, hard-coded
    hyperedge_size=g.hyperedge_size,
    graph_refresh=1,  # top-k re-selected on every call, as released
    gamma_init=float(gamma),
    spatial_dropout=0.3,
    hypergraph_dropout=0.2,
    fusion="released",
    spatial_variant="released",
    calendar_dim=0,
    node_input_dim=0,
  )
  return c


def _bounds(values: Sequence[float] | None, n: int, fill: float, name: str) -> np.ndarray:
  if values is None:
    return np.full((n, 1), fill, np.float32)
  arr = np.asarray(values, np.float32).reshape(-1)
  if arr.shape != (n,) or not np.all(np.isfinite(arr)):
    raise UserError(
      f"{name}: expected {n} finite per-node values (the training data's), got shape {arr.shape}"
    )
  return arr.reshape(n, 1)


def from_official(
  tensors: Mapping[str, np.ndarray],
  *,
  hypergraph: bool = True,
  n_head: int | None = None,
  stride: int = 8,
  hyperedge_size: int = 3,
  min_values: Sequence[float] | None = None,
  max_values: Sequence[float] | None = None,
  source: str = "state dict",
) -> Imported:
  """Official state dict (NumPy) -> Imported(config.model, params, model_state, geometry, notes)."""
  if tensors and all(k.startswith("module.") for k in tensors):  # a wrapped (DataParallel) model
    tensors = collections.OrderedDict((k[len("module.") :], v) for k, v in tensors.items())
  geometry = infer_geometry(tensors, source, stride=stride, hyperedge_size=hyperedge_size)
  table = name_table(geometry, hypergraph)
  check_table(tensors, table, source, hypergraph)
  gamma = float(np.asarray(tensors["sthgnn.gamma"], np.float32)) if "sthgnn.gamma" in tensors else 0.5
  config = model_config(geometry, n_head=n_head, hypergraph=hypergraph, gamma=gamma)
  params: dict = {}
  for e in table:
    set_path(params, e.path, e.to_stjax(np.asarray(tensors[e.official], np.float32)))
  imported = Imported(config, params, {}, geometry, _notes(tensors, table, hypergraph))
  return with_bounds(imported, min_values, max_values)


def with_bounds(
  imported: Imported, min_values: Sequence[float] | None, max_values: Sequence[float] | None
) -> Imported:
  """`imported` with its output clamp (the `bounds` collection) set to the per-node training
  min/max in scaled units (None: no clamp on that side)."""
  n = imported.geometry.num_nodes
  lower = _bounds(min_values, n, -np.inf, "min_values")
  upper = _bounds(max_values, n, np.inf, "max_values")
  if np.any(lower > upper):
    raise UserError("min_values: some node's minimum exceeds its maximum")
  notes = tuple(note for note in imported.notes if note != NO_CLAMP)
  if min_values is None and max_values is None:
    notes += (NO_CLAMP,)
  return imported._replace(model_state={"bounds": {"fusion": {"lower": lower, "upper": upper}}}, notes=notes)


def _notes(tensors, table, hypergraph: bool) -> tuple[str, ...]:
  reasons = collections.Counter(r for k in tensors if (r := ignored_reason(k, hypergraph)))
  notes = [
    f"imported {len(table)} tensors ({sum(int(np.size(tensors[e.official])) for e in table):,} values)"
  ]
  notes += [f"not imported: {count} tensors, {why}" for why, count in reasons.items()]
  if hypergraph:
    notes.append(
      "not in the checkpoint: the released HGAT's weights (fresh random draws inside every forward); "
      "the model draws them per call (or replays recorded ones, variables['hgat']), so its output "
      "is random like the released code's; hypergraph=False (--gnn-only) imports the deterministic GNN-only model"
    )
  notes.append("not in the checkpoint: the LLM prompt; pass its token ids as batch['prompt_ids']")
  return tuple(notes)


def load(
  path: str | os.PathLike,
  *,
  hypergraph: bool = True,
  n_head: int | None = None,
  stride: int = 8,
  hyperedge_size: int = 3,
  min_values: Sequence[float] | None = None,
  max_values: Sequence[float] | None = None,
) -> Imported:
  """An official checkpoint file -> Imported. See `from_official`."""
  return from_official(
    read_state_dict(path),
    hypergraph=hypergraph,
    n_head=n_head,
    stride=stride,
    hyperedge_size=hyperedge_size,
    min_values=min_values,
    max_values=max_values,
    source=str(path),
  )


def import_sth_sepnet(path: str | os.PathLike, **kwargs) -> tuple[ml_collections.ConfigDict, dict, dict]:
  """Official STH-SepNet `checkpoint` -> (config.model, params, model_state) for stjax's STH-SepNet.

  Keyword arguments as `load` (hypergraph, n_head, stride, hyperedge_size, min_values, max_values).
  The params are complete (GPT-2 included; do not merge `pretrained` weights on top); build the
  model with `load(...).geometry.data_spec()` or a DataSpec of the same shape. UserError (one line)
  for a file that is missing, truncated, not a torch zip, a pickle with anything but tensors, an
  ST-LLM or Hugging Face checkpoint, an LLM other than GPT-2, or missing, unexpected or mis-shaped
  tensors.
  """
  imported = load(path, **kwargs)
  return imported.model_config, imported.params, imported.model_state


# ----------------------------------------------------------------------------------------------
# The CLI flags (`python -m stjax.convert import-sth-sepnet`, which writes a run folder)


def read_bounds(path: str | None) -> tuple[list | None, list | None]:
  """A `--bounds` JSON file {"min_values": [N], "max_values": [N]} -> (min_values, max_values)."""
  if not path:
    return None, None
  try:
    data = json.loads(pathlib.Path(path).expanduser().read_text())
    return data["min_values"], data["max_values"]
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise UserError(
      f"{path}: expected JSON {{'min_values': [...], 'max_values': [...]}} ({type(e).__name__})"
    ) from None


def add_arguments(parser) -> None:
  """The `import-sth-sepnet` flags (argparse)."""
  parser.add_argument("--checkpoint", required=True, help="the official STH-SepNet `checkpoint` file")
  parser.add_argument("--output", required=True, help="new folder for the run")
  parser.add_argument(
    "--scaler-mean",
    help="the official StandardScaler's mean_: one number, or one per node (comma-separated or a .npy/.json/text file)",
  )
  parser.add_argument("--scaler-std", help="its scale_ (the per-node std), in the same form")
  parser.add_argument(
    "--data",
    help="or the data it was trained on (registry name or series file): scaler and clamp fitted on its train rows",
  )
  parser.add_argument(
    "--step-minutes", type=float, help="with --scaler-*: minutes per step of the data (not stored; default 5)"
  )
  parser.add_argument(
    "--gnn-only", action="store_true", help="released Bike runs (no --hgcn_true): no hypergraph"
  )
  parser.add_argument(
    "--n-head", type=int, default=None, help=f"GPT-2 heads (default width / 64 for widths {GPT2_WIDTHS})"
  )
  parser.add_argument("--stride", type=int, default=8, help="patch stride of the run (not stored; default 8)")
  parser.add_argument(
    "--hyperedge-size", type=int, default=3, help="--scale_hyperedges of the run (default 3)"
  )
  parser.add_argument(
    "--bounds",
    default=None,
    help="JSON {min_values, max_values}: the run's per-node output clamp (default: from --data, else none)",
  )
