"""The official ST-LLM checkpoint's tensor table: its geometry and every key <-> stjax leaf.

`Geometry` holds the sizes a checkpoint implies (and builds the matching GPT2Config and DataSpec);
`name_table(geometry)` lists every official tensor in state-dict order with its stjax path, shape
and exact layout hooks both ways (1x1 Conv2d <-> Dense transposes, the start_conv row permutation of
`start_conv_rows`, GPT-2 via `stjax.convert.hf_gpt2`). `check_table` (shared with the STH-SepNet
importer) refuses unexpected, missing or mis-shaped tensors; `default_n_head` gives GPT-2's head
count of a width. See `stjax.convert.official_st_llm` for the layouts in full.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

from stjax.convert import hf_gpt2
from stjax.data.windows import DataSpec
from stjax.errors import UserError
from stjax.models.backbones.config import LLM_KEY
from stjax.models.backbones.gpt2 import GPT2Config

GPT_PREFIX = "gpt.gpt2."
INPUT_DIM = 3  # official x channels: value, time-of-day fraction, day-of-week
GPT2_HEAD_DIM = 64  # every GPT-2 size: 768/12, 1024/16, 1280/20, 1600/25
GPT2_WIDTHS = (768, 1024, 1280, 1600)
# Non-persistent causal-mask buffers that checkpoints from older transformers may carry.
IGNORED = re.compile(r"^gpt\.gpt2\.h\.\d+\.attn\.(bias|masked_bias)$")

Hook = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Sizes an official checkpoint implies (all from tensor shapes, except input_dim)."""

  num_nodes: int  # N: node_emb rows (= GPT-2 positions used)
  input_len: int  # T_in: start_conv inputs / input_dim
  output_len: int  # T_out: regression_layer outputs (one per horizon)
  input_dim: int  # official x channels (3: value, tod fraction, dow)
  steps_per_day: int  # T_d: time_day rows
  embed_dim: int  # D = gpt_channel
  n_embd: int  # d = GPT-2 width
  llm_layers: int  # GPT-2 blocks kept
  vocab_size: int  # wte rows (unused in the forward)
  n_positions: int  # wpe rows

  @property
  def in_channels(self) -> int:
    """stjax x channels: the official ones minus tod and dow (stjax appends those itself)."""
    return self.input_dim - 2

  def gpt2_config(self, n_head: int = 1) -> GPT2Config:
    return GPT2Config(
      vocab_size=self.vocab_size,
      n_positions=self.n_positions,
      n_embd=self.n_embd,
      n_layer=self.llm_layers,
      n_head=n_head,
    )

  def data_spec(self):
    """A stjax DataSpec of this shape (no adjacency; target channel "value")."""
    return DataSpec(
      num_nodes=self.num_nodes,
      input_len=self.input_len,
      output_len=self.output_len,
      in_channels=self.in_channels,
      out_channels=1,
      input_offsets=tuple(range(1 - self.input_len, 1)),
      output_offsets=tuple(range(1, self.output_len + 1)),
      steps_per_day=self.steps_per_day,
      adjacency=None,
      channel_names=("value",),
    )

  def check_spec(self, spec, where: str = "data") -> None:
    """UserError when a dataset's DataSpec cannot feed this checkpoint."""
    want = {
      "num_nodes": self.num_nodes,
      "input_len": self.input_len,
      "output_len": self.output_len,
      "in_channels": self.in_channels,
      "out_channels": 1,
      "steps_per_day": self.steps_per_day,
    }
    for field, value in want.items():
      if getattr(spec, field) != value:
        raise UserError(
          f"{where}: {field} is {getattr(spec, field)} but the official checkpoint was trained with {value}"
        )


class Entry(NamedTuple):
  """One tensor: official key, stjax path, official shape, exact layout hooks both ways."""

  official: str
  path: tuple[str, ...]
  shape: tuple[int, ...]
  to_stjax: Hook
  to_official: Hook


def _copy(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(x)


def _conv_to_dense(w: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(w[:, :, 0, 0].T)


def _dense_to_conv(k: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(k.T[:, :, None, None])


def start_conv_rows(input_len: int, input_dim: int = INPUT_DIM) -> np.ndarray:
  """perm[r] = official input feature of stjax kernel row r (kernel = w[:, perm, 0, 0].T).

  stjax row t*C + c' (c' over [x channels, tod, dow]) <- official feature c*T + t with channels
  [value, tod, dow, extra...]: c' = 0 -> 0, c' = C-2 -> 1 (tod), C-1 -> 2 (dow), 1..C-3 -> 3...
  """
  c_of = [0] + list(range(3, input_dim)) + [1, 2]  # official channel of stjax channel c'
  return np.array([c_of[cp] * input_len + t for t in range(input_len) for cp in range(input_dim)], np.int64)


def name_table(geometry: Geometry) -> list[Entry]:
  """Every tensor of the checkpoint of `geometry`, in the official state-dict order."""
  g = geometry
  n, d_, d, t_in, c = g.num_nodes, g.embed_dim, g.n_embd, g.input_len, g.input_dim
  perm = start_conv_rows(t_in, c)
  inverse = np.argsort(perm)
  table = [
    Entry("node_emb", ("nodes", "node_emb"), (n, d_), _copy, _copy),
    Entry("Temb.time_day", ("calendar", "time_day"), (g.steps_per_day, d_), _copy, _copy),
    Entry("Temb.time_week", ("calendar", "time_week"), (7, d_), _copy, _copy),
    Entry(
      "start_conv.weight",
      ("start_conv", "kernel"),
      (d_, c * t_in, 1, 1),
      lambda w: np.ascontiguousarray(w[:, perm, 0, 0].T),
      lambda k: np.ascontiguousarray(k[inverse].T[:, :, None, None]),
    ),
    Entry("start_conv.bias", ("start_conv", "bias"), (d_,), _copy, _copy),
  ]
  cfg = g.gpt2_config()
  gpt = [
    Entry(GPT_PREFIX + hf, (LLM_KEY,) + path, rule.shape(cfg), _copy, _copy)
    for hf, path, rule in hf_gpt2.rules(cfg)
  ]
  table += sorted(gpt, key=lambda e: e.path[1] == "ln_f")  # GPT2Model registers ln_f after the blocks
  table += [
    Entry(
      "feature_fusion.weight", ("feature_fusion", "kernel"), (d, 3 * d_, 1, 1), _conv_to_dense, _dense_to_conv
    ),
    Entry("feature_fusion.bias", ("feature_fusion", "bias"), (d,), _copy, _copy),
    Entry(
      "regression_layer.weight",
      ("regression_layer", "kernel"),
      (g.output_len, d, 1, 1),
      _conv_to_dense,
      _dense_to_conv,
    ),
    Entry("regression_layer.bias", ("regression_layer", "bias"), (g.output_len,), _copy, _copy),
  ]
  return table


def stjax_shape(entry: Entry) -> tuple[int, ...]:
  """Shape of the stjax leaf of `entry` (Dense kernels [in, out])."""
  s = entry.shape
  return (s[1], s[0]) if len(s) == 4 else s


def check_table(
  tensors: Mapping[str, np.ndarray],
  table: list,
  source: str,
  ignored: Callable[[str], bool] = IGNORED.match,
  model: str = "ST-LLM",
) -> None:
  """Every key of `tensors` in `table` (entries with `official` and `shape`) or `ignored`, every entry
  present with its shape and a float dtype (the official STH-SepNet importer uses it too)."""
  known = {e.official for e in table}
  for key in tensors:
    if key not in known and not ignored(key):
      raise UserError(f"{source}: unexpected tensor {key} (no place in a {len(table)}-tensor {model})")
  for e in table:
    if e.official not in tensors:
      raise UserError(f"{source}: missing tensor {e.official}")
    got = tuple(np.shape(tensors[e.official]))
    if got != e.shape:
      raise UserError(
        f"{source}: tensor {e.official} has shape {got}, but the checkpoint's geometry implies {e.shape}"
      )
    dtype = np.asarray(tensors[e.official]).dtype
    if dtype.kind != "f" and dtype.name != "bfloat16":
      raise UserError(f"{source}: tensor {e.official} has dtype {dtype}, expected floating point")


def default_n_head(n_embd: int) -> int:
  """GPT-2's head count for its widths (64-wide heads); UserError for any other width."""
  if n_embd not in GPT2_WIDTHS:
    raise UserError(
      f"n_head: not stored in an official checkpoint, and width {n_embd} is no GPT-2 size "
      f"({', '.join(map(str, GPT2_WIDTHS))}); pass n_head"
    )
  return n_embd // GPT2_HEAD_DIM
