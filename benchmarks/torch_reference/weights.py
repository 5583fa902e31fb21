"""Copy a stjax parameter tree into a PyTorch reference model, so both start from the same init.

Each reference model lists, for every torch parameter and buffer, the stjax leaf it comes from and
how it is laid out (`name_map()` -> {torch name: (stjax path, layout)}):

- "same": identical layout (HF Conv1D kernels are [in, out] in both; LayerNorm scale -> weight;
  embedding tables; expert weight stacks; memory keys);
- "linear": a Flax Dense kernel [in, out] becomes a torch Linear weight [out, in] (transposed).

`load_stjax_params` is strict both ways: every torch tensor must be filled, every stjax leaf must be
used (apart from those the map declares unused, e.g. GPT-2's wte when inputs are embeddings), and
shapes must agree. So a parity test cannot pass on a partial copy.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

Layout = str  # "same" | "linear"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  """Nested dict of arrays -> {"a/b/c": np.ndarray float32}."""
  out = {}
  for k, v in tree.items():
    path = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(flatten(v, path))
    else:
      out[path] = np.asarray(v)
  return out


def gpt2_block_map(torch_prefix: str, stjax_prefix: str, n_layer: int) -> dict[str, tuple[str, Layout]]:
  """Map of a GPT-2 trunk's blocks (and ln_f): torch `{prefix}h.{i}.…` <- stjax `{prefix}/h_{i}/…`.

  Args:
    torch_prefix: e.g. "llm." (trailing dot included, or "").
    stjax_prefix: e.g. "llm".
    n_layer: blocks. HF `GPT2Model` and our own torch blocks share these names.
  """
  m: dict[str, tuple[str, Layout]] = {}

  def ln(t, s):
    m[f"{t}.weight"] = (f"{s}/scale", "same")
    m[f"{t}.bias"] = (f"{s}/bias", "same")

  def conv(t, s):
    m[f"{t}.weight"] = (f"{s}/kernel", "same")
    m[f"{t}.bias"] = (f"{s}/bias", "same")

  for i in range(n_layer):
    t, s = f"{torch_prefix}h.{i}", f"{stjax_prefix}/h_{i}"
    ln(f"{t}.ln_1", f"{s}/ln_1")
    ln(f"{t}.ln_2", f"{s}/ln_2")
    conv(f"{t}.attn.c_attn", f"{s}/attn/c_attn")
    conv(f"{t}.attn.c_proj", f"{s}/attn/c_proj")
    conv(f"{t}.mlp.c_fc", f"{s}/mlp/c_fc")
    conv(f"{t}.mlp.c_proj", f"{s}/mlp/c_proj")
  ln(f"{torch_prefix}ln_f", f"{stjax_prefix}/ln_f")
  return m


def dense_map(torch_name: str, stjax_path: str, bias: bool = True) -> dict[str, tuple[str, Layout]]:
  """A Flax Dense at `stjax_path` -> torch Linear `torch_name`."""
  m = {f"{torch_name}.weight": (f"{stjax_path}/kernel", "linear")}
  if bias:
    m[f"{torch_name}.bias"] = (f"{stjax_path}/bias", "same")
  return m


def load_stjax_params(
  model: torch.nn.Module,
  variables: Mapping[str, Any],
  name_map: Mapping[str, tuple[str, Layout]],
  unused: tuple[str, ...] = (),
) -> None:
  """Copies stjax `variables` ({"params": ..., other collections}) into `model` in place.

  Paths in `name_map` start with the collection ("params/llm/h_0/...", "memory/...").
  `unused`: stjax paths deliberately not copied (prefix match).
  Raises ValueError on a missing or extra tensor or a shape mismatch.
  """
  flat = flatten(variables)
  tensors = dict(model.state_dict(keep_vars=True))  # parameters + persistent buffers (memory keys)
  missing_torch = sorted(set(tensors) - set(name_map))  # non-persistent buffers are constants
  if missing_torch:
    raise ValueError(f"torch tensors with no stjax source: {missing_torch}")
  used = set()
  with torch.no_grad():
    for tname, (spath, layout) in name_map.items():
      if tname not in tensors:
        raise ValueError(f"name map names torch tensor {tname!r}, which the model does not have")
      if spath not in flat:
        raise ValueError(f"stjax leaf {spath!r} (for torch {tname!r}) not found")
      value = flat[spath].astype(np.float32)
      if layout == "linear":
        value = value.T
      elif layout != "same":
        raise ValueError(f"unknown layout {layout!r}")
      target = tensors[tname]
      if tuple(target.shape) != value.shape:
        raise ValueError(f"{tname}: torch shape {tuple(target.shape)} != stjax {spath} {value.shape}")
      target.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype))
      used.add(spath)
  left = sorted(p for p in set(flat) - used if not any(p.startswith(u) for u in unused))
  if left:
    raise ValueError(f"stjax leaves not copied into the torch model: {left}")
