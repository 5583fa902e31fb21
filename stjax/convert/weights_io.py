"""Reading Hugging Face weight files into NumPy without torch.

- `model.safetensors` and sharded `model.safetensors.index.json`: safetensors' NumPy API, lazily,
  so only the tensors asked for are read (truncating a deep model reads only its first blocks).
- `pytorch_model.bin` (torch's zip format): a restricted unpickler that only rebuilds tensors from
  their raw storages (weights-only; no torch import, no arbitrary code).
"""

from __future__ import annotations

import json
import pathlib
import pickle
import zipfile
from typing import Callable, Iterable

import numpy as np
from safetensors import SafetensorError, safe_open

from stjax.errors import UserError

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"

# torch storage class name -> NumPy dtype (bfloat16 through ml_dtypes, which jax ships).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class TensorSource:
  """Names of the tensors in a checkpoint folder and a reader for one of them."""

  def __init__(self, description: str, names: Iterable[str], read: Callable[[str], np.ndarray],
               shapes: dict[str, tuple[int, ...]]):
    self.description = description
    self.names = set(names)
    self.shapes = shapes
    self._read = read

  def read(self, name: str) -> np.ndarray:
    return self._read(name)


def open_weights(folder: pathlib.Path) -> TensorSource:
  """Opens the weights of an HF folder: safetensors, sharded safetensors, or pytorch_model.bin."""
  if (folder / SAFETENSORS).is_file():
    return _open_safetensors_files(str(folder / SAFETENSORS), {None: folder / SAFETENSORS})
  if (folder / SAFETENSORS_INDEX).is_file():
    index_path = folder / SAFETENSORS_INDEX
    try:
      weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise UserError(f"{index_path}: not a safetensors index ({e})") from None
    files = {}
    for name, shard in weight_map.items():
      files.setdefault(shard, []).append(name)
    missing = [s for s in files if not (folder / s).is_file()]
    if missing:
      raise UserError(f"{index_path}: shard file(s) missing: {', '.join(sorted(missing))}")
    return _open_safetensors_files(str(index_path), {s: folder / s for s in files})
  if (folder / TORCH_BIN).is_file():
    return _open_torch_bin(folder / TORCH_BIN)
  raise UserError(f"{folder}: no weights found ({SAFETENSORS}, {SAFETENSORS_INDEX} or {TORCH_BIN})")


def _open_safetensors_files(description: str, files: dict) -> TensorSource:
  where: dict[str, pathlib.Path] = {}
  shapes: dict[str, tuple[int, ...]] = {}
  for path in files.values():
    try:
      with safe_open(str(path), framework="numpy") as f:
        for name in f.keys():
          where[name] = path
          shapes[name] = tuple(f.get_slice(name).get_shape())
    except SafetensorError as e:
      raise UserError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None

  def read(name: str) -> np.ndarray:
    with safe_open(str(where[name]), framework="numpy") as f:
      return f.get_tensor(name)

  return TensorSource(description, where, read, shapes)


class _WeightsOnlyUnpickler(pickle.Unpickler):
  """Unpickles a torch state dict: only OrderedDict, tensor rebuilds and storage types."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
    super().__init__(file)
    self._archive = archive
    self._prefix = prefix
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module: str, name: str):
    if (module, name) == ("collections", "OrderedDict"):
      import collections
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return lambda data, requires_grad, backward_hooks, *args: data
    if module == "torch" and name in _STORAGE_DTYPES:
      return name
    if (module, name) == ("torch", "BFloat16Storage"):
      return name
    raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (weights-only loader)")

  def persistent_load(self, pid):
    kind, storage_type, key, _location, _numel = pid
    if kind != "storage":
      raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
    if key not in self._storages:
      raw = self._archive.read(f"{self._prefix}/data/{key}")
      if storage_type == "BFloat16Storage":
        import ml_dtypes
        dtype = ml_dtypes.bfloat16
      else:
        dtype = _STORAGE_DTYPES[storage_type]
      self._storages[key] = np.frombuffer(raw, dtype=dtype)
    return self._storages[key]


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_unused) -> np.ndarray:
  """torch._utils._rebuild_tensor_v2 on a flat NumPy storage: a strided view, copied."""
  item = storage.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                         strides=tuple(s * item for s in stride))
  return np.array(view)


def _open_torch_bin(path: pathlib.Path) -> TensorSource:
  if not zipfile.is_zipfile(path):
    raise UserError(f"{path}: legacy (pre-zip) torch format is not supported; re-save it with "
                    "torch>=1.6 or convert it to model.safetensors")
  with zipfile.ZipFile(path) as archive:
    pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if not pkl:
      raise UserError(f"{path}: no data.pkl inside; not a torch checkpoint")
    prefix = pkl[0].rsplit("/", 1)[0] if "/" in pkl[0] else ""
    with archive.open(pkl[0]) as f:
      try:
        state = _WeightsOnlyUnpickler(f, archive, prefix).load()
      except pickle.UnpicklingError as e:
        raise UserError(f"{path}: {e}") from None
  if not isinstance(state, dict):
    raise UserError(f"{path}: expected a state dict, found {type(state).__name__}")
  tensors = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
  return TensorSource(str(path), tensors, tensors.__getitem__, {k: v.shape for k, v in tensors.items()})
