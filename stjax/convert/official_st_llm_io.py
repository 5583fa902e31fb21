"""Reading and writing official ST-LLM checkpoint files, never executing pickled code.

`read_state_dict` turns a `.pth`/`.pt`/`.bin` (torch zip, through weights_io's weights-only
unpickler) or `.safetensors` file into {key: NumPy array} in file order, with one-line UserErrors
for folders, missing files and anything that is not a state dict of tensors. `write_official`
writes a state dict back as a torch.load-able `best_model.pth`, atomically (needs torch).
"""

from __future__ import annotations

import collections
import os
import pathlib
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from stjax.convert import weights_io
from stjax.errors import UserError


def _read_safetensors(path: pathlib.Path) -> dict[str, Any]:
  try:
    with safe_open(str(path), framework="numpy") as f:
      return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)
  except (SafetensorError, OSError, ValueError, TypeError) as e:
    raise UserError(f"{path}: not a readable safetensors file ({type(e).__name__}: {str(e)[:120]})") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A `.pth`/`.pt`/`.bin` (torch zip) or `.safetensors` file -> {key: NumPy array}, file order."""
  path = pathlib.Path(path).expanduser()
  if path.is_dir():
    hint = ""
    if (path / "config.json").is_file():
      hint = (
        " (it looks like a Hugging Face model folder: that is GPT-2, set config.model.pretrained instead)"
      )
    raise UserError(
      f"{path}: expected an official ST-LLM checkpoint file (best_model.pth), found a folder{hint}"
    )
  if not path.is_file():
    raise UserError(f"{path}: no such file")
  state = _read_safetensors(path) if path.suffix == ".safetensors" else weights_io.read_torch_checkpoint(path)
  if not isinstance(state, Mapping):
    raise UserError(
      f"{path}: expected a state dict (torch.save(model.state_dict())), found {type(state).__name__}"
    )
  out: dict[str, np.ndarray] = collections.OrderedDict()
  for key, value in state.items():
    if not isinstance(value, np.ndarray):
      kind = (
        "a nested dict (a training checkpoint, not model.state_dict())"
        if isinstance(value, Mapping)
        else type(value).__name__
      )
      raise UserError(f"{path}: entry {key!r} is {kind}; expected a state dict of tensors")
    out[str(key)] = value
  if not out:
    raise UserError(f"{path}: empty state dict")
  return out


def write_official(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> pathlib.Path:
  """Writes a state dict as the official `best_model.pth` (torch.save of CPU tensors), atomically.

  The result loads with `torch.load(path, weights_only=True)` and `ST_LLM.load_state_dict`. Needs
  torch (the test extras); nothing is written on error.
  """
  try:
    import torch  # late: optional (test extras) and slow to import
  except ImportError:
    raise UserError(f"{path}: writing an official .pth needs torch (pip install torch)") from None
  path = pathlib.Path(path).expanduser().absolute()
  if not path.parent.is_dir():
    raise UserError(f"{path.parent}: no such folder")
  tensors = collections.OrderedDict(
    (k, torch.from_numpy(np.array(v, np.float32, copy=True))) for k, v in state.items()
  )
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
  try:
    torch.save(tensors, tmp / path.name)  # same name inside, so the archive prefix is the file's stem
    os.replace(tmp / path.name, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return path
