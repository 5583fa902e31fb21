"""Official ST-LLM checkpoints (github ChenxiLiu-HNU/ST-LLM, `best_model.pth`) <-> stjax ST-LLM.

    model_config, params = import_st_llm("best_model.pth")            # config.model + params
    imported = load("best_model.pth", n_head=2, unfrozen_layers=1)     # + imported.geometry
    state = to_official(params)                                        # key -> NumPy, bit-exact
    write_official(state, "exported.pth")                              # torch.load-able (needs torch)

The official train.py saves `torch.save(model.state_dict())` of its `ST_LLM` module:

    node_emb [N, D]                      Temb.time_day [T_d, D]     Temb.time_week [7, D]
    start_conv.weight [D, 3*T_in, 1, 1]  start_conv.bias [D]        (1x1 Conv2d)
    gpt.gpt2.{wte,wpe,h.i.*,ln_f}.*      (HF GPT2Model, blocks h.0 .. h.{L-1})
    feature_fusion.weight [d, 3D, 1, 1]  feature_fusion.bias [d]
    regression_layer.weight [T_out, d, 1, 1]  regression_layer.bias [T_out]

Every key has one stjax leaf and back (`name_table`); an unmapped key on either side is a UserError
naming it. Layout changes, all exact (transposes and row permutations):
- 1x1 Conv2d (out, in, 1, 1) -> Dense kernel [in, out] (= w[:, :, 0, 0].T).
- start_conv's input feature is channel-major c*T_in + t (the official forward flattens
  (B, C, N, T) after moving N forward), channels [value, tod fraction, dow]; stjax flattens
  time-major t*(C_in+2) + c' with c' over [x channels, tod, dow]: the rows are permuted. Official
  channels beyond the third (none in the released data) become stjax x channels 1, 2, ...
- GPT-2 tensors: `stjax.convert.hf_gpt2`'s table (Conv1D kernels already [in, out]).

Geometry comes from the shapes: N, D (node_emb), T_d (time_day rows), T_in (start_conv inputs / 3),
T_out (regression_layer outputs), width d (wte), vocab (wte rows), positions (wpe rows), blocks
(count of gpt.gpt2.h.*). Not stored, so given or defaulted: `n_head` (GPT-2 widths 768/1024/1280/
1600 have 64-wide heads, so n_embd // 64; any other width must say it), `unfrozen_layers` U of PFA
(training only; default min(2, L) as stjax's config), the input channel count (3, as the released
data; `input_dim`). Buffers of older transformers (`attn.bias`, `attn.masked_bias`) are ignored and
a uniform `module.` prefix (DataParallel) is stripped.

Reading never executes pickled code: the zip's data.pkl goes through weights_io's weights-only
unpickler (OrderedDict, tensor rebuilds, storage types; anything else is refused), with tensor
views checked against their storage. torch is needed only to write a `.pth` (`write_official`).

The tensor table and geometry live in `official_st_llm_table`, file reading and writing in
`official_st_llm_io`; their public names are importable from here too.
"""

from __future__ import annotations

import collections
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import ml_collections
import numpy as np

from stjax.convert.hf_common import get_path, leaf_paths, plain, set_path
from stjax.convert.official_st_llm_io import read_state_dict, write_official
from stjax.convert.official_st_llm_table import (  # noqa: F401 (public here too)
  GPT2_HEAD_DIM,
  GPT2_WIDTHS,
  GPT_PREFIX,
  IGNORED,
  INPUT_DIM,
  Entry,
  Geometry,
  Hook,
  check_table,
  default_n_head,
  name_table,
  start_conv_rows,
  stjax_shape,
)
from stjax.errors import UserError
from stjax.models.backbones.config import LLM_KEY
from stjax.models.st_llm import default_config

# Keys of a Hugging Face GPT-2 checkpoint (GPT2Model or GPT2LMHeadModel) - the wrong file here.
_HF_GPT2 = re.compile(r"^(transformer\.)?(wte|wpe|ln_f|h\.\d+\.(ln_1|ln_2|attn|mlp))\.|^lm_head\.weight$")
_ANCHORS = (
  "node_emb",
  "Temb.time_day",
  "start_conv.weight",
  "feature_fusion.weight",
  "regression_layer.weight",
  GPT_PREFIX + "wte.weight",
  GPT_PREFIX + "wpe.weight",
  GPT_PREFIX + "h.0.mlp.c_fc.weight",
)


class Imported(NamedTuple):
  model_config: ml_collections.ConfigDict
  params: dict
  geometry: Geometry


# ----------------------------------------------------------------------------------------------
# Official state dict -> stjax.


def _strip_module_prefix(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  if tensors and all(k.startswith("module.") for k in tensors):
    return collections.OrderedDict((k[len("module.") :], v) for k, v in tensors.items())
  return collections.OrderedDict(tensors)


def infer_geometry(
  tensors: Mapping[str, np.ndarray], source: str = "state dict", input_dim: int = INPUT_DIM
) -> Geometry:
  """The geometry an official state dict implies (see the module docstring); UserError otherwise."""
  keys = list(tensors)
  if not keys:
    raise UserError(f"{source}: empty state dict")
  if "node_emb" not in tensors and not any(k.startswith(GPT_PREFIX) for k in keys):
    if any(_HF_GPT2.match(k) for k in keys):
      raise UserError(
        f"{source}: this is a GPT-2 (Hugging Face) checkpoint, not an official ST-LLM state dict; "
        "pretrained GPT-2 goes to config.model.pretrained"
      )
    raise UserError(
      f"{source}: not an official ST-LLM state dict (no node_emb or {GPT_PREFIX}* tensors; "
      f"first key {keys[0]!r})"
    )
  for key in _ANCHORS:
    if key not in tensors:
      raise UserError(f"{source}: missing tensor {key}")
  shape = {k: tuple(np.shape(tensors[k])) for k in _ANCHORS}
  for key, ndim in (
    ("node_emb", 2),
    ("Temb.time_day", 2),
    ("start_conv.weight", 4),
    ("feature_fusion.weight", 4),
    ("regression_layer.weight", 4),
    (GPT_PREFIX + "wte.weight", 2),
    (GPT_PREFIX + "wpe.weight", 2),
    (GPT_PREFIX + "h.0.mlp.c_fc.weight", 2),
  ):
    if len(shape[key]) != ndim:
      raise UserError(f"{source}: tensor {key} has shape {shape[key]}, expected {ndim} dimensions")
  n, d_ = shape["node_emb"]
  vocab, d = shape[GPT_PREFIX + "wte.weight"]
  features = shape["start_conv.weight"][1]
  if input_dim < 3:
    raise UserError(f"input_dim: must be >= 3 (value, tod, dow), got {input_dim}")
  if features % input_dim:
    raise UserError(
      f"{source}: tensor start_conv.weight has {features} input features, not a multiple of "
      f"input_dim={input_dim}"
    )
  blocks = sorted(
    {int(m.group(1)) for k in keys if (m := re.match(re.escape(GPT_PREFIX) + r"h\.(\d+)\.", k))}
  )
  if blocks != list(range(len(blocks))):
    raise UserError(f"{source}: GPT-2 blocks {blocks} are not numbered 0..{len(blocks) - 1}")
  inner = shape[GPT_PREFIX + "h.0.mlp.c_fc.weight"][1]
  if inner != 4 * d:
    raise UserError(
      f"{source}: tensor {GPT_PREFIX}h.0.mlp.c_fc.weight has MLP width {inner}; stjax's GPT-2 "
      f"(and ST-LLM) uses 4 x {d}"
    )
  geometry = Geometry(
    num_nodes=n,
    input_len=features // input_dim,
    output_len=shape["regression_layer.weight"][0],
    input_dim=input_dim,
    steps_per_day=shape["Temb.time_day"][0],
    embed_dim=d_,
    n_embd=d,
    llm_layers=len(blocks),
    vocab_size=vocab,
    n_positions=shape[GPT_PREFIX + "wpe.weight"][0],
  )
  if geometry.num_nodes > geometry.n_positions:
    raise UserError(f"{source}: {n} nodes (node_emb) exceed the {geometry.n_positions} GPT-2 positions (wpe)")
  return geometry


def model_config(
  geometry: Geometry, n_head: int | None = None, unfrozen_layers: int | None = None
) -> ml_collections.ConfigDict:
  """`config.model` (stjax.models.st_llm.default_config fields) of a checkpoint of `geometry`."""
  c = default_config()
  n_head = default_n_head(geometry.n_embd) if n_head is None else int(n_head)
  if n_head < 1 or geometry.n_embd % n_head:
    raise UserError(f"n_head: {n_head} does not divide the width {geometry.n_embd}")
  u = min(c.unfrozen_layers, geometry.llm_layers) if unfrozen_layers is None else int(unfrozen_layers)
  if not 0 <= u <= geometry.llm_layers:
    raise UserError(f"unfrozen_layers: {u} not in 0..{geometry.llm_layers} (the checkpoint's GPT-2 blocks)")
  c.update(
    pretrained="",
    llm_layers=geometry.llm_layers,
    unfrozen_layers=u,
    trainable=f"pfa({u})",
    n_embd=geometry.n_embd,
    n_head=n_head,
    vocab_size=geometry.vocab_size,
    n_positions=geometry.n_positions,
    embed_dim=geometry.embed_dim,
    causal=True,
    dtype="float32",
  )
  return c


def from_official(
  tensors: Mapping[str, np.ndarray],
  *,
  n_head: int | None = None,
  unfrozen_layers: int | None = None,
  input_dim: int = INPUT_DIM,
  source: str = "state dict",
) -> Imported:
  """Official state dict (NumPy) -> Imported(config.model, stjax params, geometry)."""
  tensors = _strip_module_prefix(tensors)
  geometry = infer_geometry(tensors, source, input_dim)
  table = name_table(geometry)
  check_table(tensors, table, source)
  config = model_config(geometry, n_head, unfrozen_layers)
  params: dict = {}
  for e in table:
    set_path(params, e.path, e.to_stjax(np.asarray(tensors[e.official], np.float32)))
  return Imported(config, params, geometry)


def load(
  path: str | os.PathLike,
  *,
  n_head: int | None = None,
  unfrozen_layers: int | None = None,
  input_dim: int = INPUT_DIM,
) -> Imported:
  """An official checkpoint file -> Imported(config.model, params, geometry). See `from_official`."""
  return from_official(
    read_state_dict(path),
    n_head=n_head,
    unfrozen_layers=unfrozen_layers,
    input_dim=input_dim,
    source=str(path),
  )


def import_st_llm(
  checkpoint_path: str | os.PathLike, *, n_head: int | None = None, unfrozen_layers: int | None = None
) -> tuple[ml_collections.ConfigDict, dict]:
  """Official ST-LLM `best_model.pth` -> (config.model, params) for stjax's ST-LLM.

  The params are complete (GPT-2 included): build the model with `model_config` and the data's
  DataSpec (which must match `load(...).geometry`, see `Geometry.check_spec`) and do not merge
  `pretrained` weights on top. UserError (one line) for a file that is missing, truncated, not a
  torch zip, a pickle with anything but tensors in it, a GPT-2 checkpoint, or has missing,
  unexpected or mis-shaped tensors.
  """
  imported = load(checkpoint_path, n_head=n_head, unfrozen_layers=unfrozen_layers)
  return imported.model_config, imported.params


# ----------------------------------------------------------------------------------------------
# stjax -> official state dict and .pth.


def geometry_of_params(params: Any, input_dim: int = INPUT_DIM) -> Geometry:
  """The geometry of stjax ST-LLM params (arrays or ShapeDtypeStructs)."""
  params = plain(params)
  try:
    n, d_ = np.shape(params["nodes"]["node_emb"])
    rows = np.shape(params["start_conv"]["kernel"])[0]
    vocab, d = np.shape(params[LLM_KEY]["wte"]["embedding"])
    positions = np.shape(params[LLM_KEY]["wpe"]["embedding"])[0]
    out = np.shape(params["regression_layer"]["kernel"])[1]
    steps = np.shape(params["calendar"]["time_day"])[0]
  except KeyError as e:
    raise UserError(f"params: not stjax ST-LLM params (no {e.args[0]!r})") from None
  except (TypeError, ValueError) as e:
    raise UserError(f"params: not stjax ST-LLM params ({type(e).__name__}: {e})") from None
  if rows % input_dim:
    raise UserError(f"params: start_conv/kernel has {rows} rows, not a multiple of input_dim={input_dim}")
  blocks = sum(1 for k in params[LLM_KEY] if re.fullmatch(r"h_\d+", str(k)))
  return Geometry(
    num_nodes=n,
    input_len=rows // input_dim,
    output_len=out,
    input_dim=input_dim,
    steps_per_day=steps,
    embed_dim=d_,
    n_embd=d,
    llm_layers=blocks,
    vocab_size=vocab,
    n_positions=positions,
  )


def official_names(params: Any, input_dim: int = INPUT_DIM) -> dict[tuple[str, ...], str]:
  """{stjax leaf path: official key} for ST-LLM params (arrays or ShapeDtypeStructs)."""
  return {e.path: e.official for e in name_table(geometry_of_params(params, input_dim))}


def to_official(params: Any, input_dim: int = INPUT_DIM) -> collections.OrderedDict[str, np.ndarray]:
  """stjax ST-LLM params -> the official state dict (NumPy float32, official key order).

  A stjax leaf without an official key (e.g. LoRA adapters) or a missing/mis-shaped leaf is a
  UserError naming it.
  """
  params = plain(params)
  table = name_table(geometry_of_params(params, input_dim))
  paths = {e.path for e in table}
  for p in leaf_paths(params):
    if tuple(p) not in paths:
      raise UserError(f"params: {'/'.join(p)} has no official ST-LLM key")
  state = collections.OrderedDict()
  for e in table:
    try:
      value = np.asarray(get_path(params, e.path), np.float32)
    except KeyError:
      raise UserError(f"params: missing {'/'.join(e.path)} (official {e.official})") from None
    if value.shape != stjax_shape(e):
      raise UserError(f"params: {'/'.join(e.path)} has shape {value.shape}, expected {stjax_shape(e)}")
    state[e.official] = e.to_official(value)
  return state


def export_st_llm(params: Any, path: str | os.PathLike, input_dim: int = INPUT_DIM) -> pathlib.Path:
  """stjax ST-LLM params -> an official `best_model.pth` (`to_official` + `write_official`)."""
  return write_official(to_official(params, input_dim), path)
