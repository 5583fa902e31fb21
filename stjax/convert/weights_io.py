"""Reading Hugging Face weight files into NumPy without torch.

- `model.safetensors` and sharded `model.safetensors.index.json`: safetensors' NumPy API, lazily,
  so only the tensors asked for are read (truncating a deep model reads only its first blocks).
- `pytorch_model.bin` (torch's zip format): a restricted unpickler that only rebuilds tensors from
  their raw storages (weights-only; no torch import, no arbitrary code).

Both are treated as hostile input: safetensors validates its header itself (length, JSON, dtype
names, offsets covering the data exactly, shape x itemsize == byte length); this module refuses the
dtypes NumPy cannot hold, and bound-checks every torch tensor against its storage (offset, sizes,
strides, element count) before viewing it. A bad file is one UserError line, never a crash.
"""

from __future__ import annotations

import collections
import json
import math
import pathlib
import pickle
import zipfile
from typing import Callable, Iterable

import ml_dtypes  # registers bfloat16 with NumPy (safetensors' BF16, torch's BFloat16Storage)
import numpy as np
from safetensors import SafetensorError, safe_open

from stjax.errors import UserError

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"

# torch storage class name -> NumPy dtype (bfloat16 through ml_dtypes, which jax ships).
_STORAGE_DTYPES = {
  "FloatStorage": np.float32,
  "DoubleStorage": np.float64,
  "HalfStorage": np.float16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
  "BFloat16Storage": ml_dtypes.bfloat16,
}
# safetensors dtypes that NumPy reads (the F8/F6/F4 formats are not among them).
_SAFETENSORS_DTYPES = {
  "BOOL",
  "U8",
  "I8",
  "I16",
  "U16",
  "F16",
  "BF16",
  "I32",
  "U32",
  "F32",
  "F64",
  "I64",
  "U64",
  "C64",
}
# Rebuilt tensors may hold at most this many times the bytes of the storages read, so a crafted
# pickle cannot blow up memory (tied weights share one array; a state dict's views seldom overlap).
_MAX_EXPANSION = 4


def _line(text) -> str:
  """`text` on one line, at most 300 characters (names in a hostile file may hold newlines)."""
  text = " ".join(str(text).split())
  return text if len(text) <= 300 else text[:297] + "..."


class TensorSource:
  """Names of the tensors in a checkpoint folder and a reader for one of them."""

  def __init__(
    self,
    description: str,
    names: Iterable[str],
    read: Callable[[str], np.ndarray],
    shapes: dict[str, tuple[int, ...]],
  ):
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
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
      raise UserError(f"{index_path}: not a safetensors index ({type(e).__name__}: {_line(e)})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
      raise UserError(f"{index_path}: weight_map is not a mapping of tensor names to shard file names")
    files = {}
    for name, shard in weight_map.items():
      if pathlib.PurePosixPath(shard).name != shard or shard in ("", ".", ".."):
        raise UserError(f"{index_path}: shard {_line(repr(shard))} is not a file name in the folder")
      files.setdefault(shard, []).append(name)
    missing = [s for s in files if not (folder / s).is_file()]
    if missing:
      raise UserError(f"{index_path}: shard file(s) missing: {_line(', '.join(sorted(missing)))}")
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
          tensor = f.get_slice(name)
          if tensor.get_dtype() not in _SAFETENSORS_DTYPES:
            raise UserError(
              f"{path}: tensor {_line(repr(name))} has dtype {tensor.get_dtype()}, which NumPy "
              f"cannot read (readable: {', '.join(sorted(_SAFETENSORS_DTYPES))})"
            )
          where[name] = path
          shapes[name] = tuple(tensor.get_shape())
    except (SafetensorError, OSError) as e:
      raise UserError(f"{path}: not a readable safetensors file ({type(e).__name__}: {_line(e)})") from None

  def read(name: str) -> np.ndarray:
    try:
      with safe_open(str(where[name]), framework="numpy") as f:
        return f.get_tensor(name)
    except (SafetensorError, OSError) as e:  # changed on disk since it was opened
      raise UserError(
        f"{where[name]}: cannot read tensor {_line(repr(name))} ({type(e).__name__}: {_line(e)})"
      ) from None

  return TensorSource(description, where, read, shapes)


class _Refused(pickle.UnpicklingError):
  """What the weights-only unpickler found wrong in a file (said as is; pickle's own errors are not)."""


class _WeightsOnlyUnpickler(pickle.Unpickler):
  """Unpickles a torch state dict: only OrderedDict, tensor rebuilds and storage types.

  Every storage is checked against its zip entry and every tensor against its storage before a
  view is taken; anything inconsistent raises `_Refused` with what is wrong.
  """

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
    super().__init__(file)
    self._archive = archive
    self._prefix = prefix
    self._storages: dict[str, np.ndarray] = {}
    self._storage_ids: set[int] = set()
    self._tensors: dict[tuple, np.ndarray] = {}  # one array per distinct view (tied weights)
    self._storage_bytes = 0
    self._tensor_bytes = 0

  def find_class(self, module: str, name: str):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return self._rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return lambda data, requires_grad, backward_hooks, *args: data
    if module == "torch" and name in _STORAGE_DTYPES:
      return name
    raise _Refused(f"refusing to unpickle {module}.{name} (weights-only loader)")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise _Refused(f"unknown persistent id {str(pid)[:80]}")
    _, storage_type, key, _location, numel = pid
    if not (isinstance(storage_type, str) and storage_type in _STORAGE_DTYPES):
      raise _Refused(f"unknown storage type {str(storage_type)[:80]}")
    if not isinstance(key, str) or not _is_count(numel):
      raise _Refused(f"bad storage reference {str(pid)[:80]}")
    dtype = np.dtype(_STORAGE_DTYPES[storage_type])
    if key not in self._storages:
      entry = f"{self._prefix}/data/{key}" if self._prefix else f"data/{key}"
      try:
        info = self._archive.getinfo(entry)
      except KeyError:
        raise _Refused(f"storage {key!r} has no entry {entry!r} in the archive") from None
      if info.file_size != numel * dtype.itemsize:
        raise _Refused(
          f"storage {key!r} holds {info.file_size} bytes, but the pickle says {numel} "
          f"x {dtype.itemsize}-byte {storage_type} elements"
        )
      raw = self._archive.read(entry)
      if len(raw) != info.file_size:
        raise _Refused(f"storage {key!r}: {len(raw)} bytes read of {info.file_size}")
      self._storages[key] = np.frombuffer(raw, dtype=dtype)
      self._storage_ids.add(id(self._storages[key]))
      self._storage_bytes += len(raw)
    storage = self._storages[key]
    if storage.dtype != dtype or storage.size != numel:
      raise _Refused(
        f"storage {key!r} is referenced as {numel} {storage_type} elements and as "
        f"{storage.size} {storage.dtype} elements"
      )
    return storage

  def _rebuild_tensor(self, storage, offset, size, stride, *_unused) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2 on a flat NumPy storage: a bound-checked strided view, copied."""
    if id(storage) not in self._storage_ids:
      raise _Refused("a tensor is rebuilt from something that is not a storage of this file")
    size, stride = _int_tuple(size), _int_tuple(stride)
    if size is None or stride is None or len(size) != len(stride) or not _is_count(offset):
      raise _Refused(
        f"bad tensor layout (offset {str(offset)[:40]}, size {str(size)[:80]}, stride {str(stride)[:80]})"
      )
    if any(n < 0 for n in size) or any(s < 0 for s in stride):
      raise _Refused(f"negative size or stride in tensor of size {size}, stride {stride}")
    numel = math.prod(size)
    if numel and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.size:
      raise _Refused(
        f"tensor of size {size}, stride {stride}, offset {offset} reaches past its "
        f"storage of {storage.size} elements"
      )
    if numel == 0 and offset > storage.size:
      raise _Refused(f"tensor offset {offset} is past its storage of {storage.size} elements")
    key = (id(storage), offset, size, stride)
    if key not in self._tensors:
      self._tensor_bytes += numel * storage.itemsize
      if self._tensor_bytes > _MAX_EXPANSION * self._storage_bytes:
        raise _Refused(
          f"its tensors would hold {self._tensor_bytes} bytes, more than "
          f"{_MAX_EXPANSION}x the {self._storage_bytes} bytes of its storages"
        )
      if numel == 0:
        self._tensors[key] = np.zeros(size, storage.dtype)
      else:
        strides = tuple(
          s * storage.itemsize if n > 1 else 0 for n, s in zip(size, stride)
        )  # size 1: any stride
        view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=strides, writeable=False)
        self._tensors[key] = np.array(view)
    return self._tensors[key]


def _is_count(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _int_tuple(value) -> tuple[int, ...] | None:
  """`value` as a tuple of ints (torch pickles sizes and strides as tuples), or None."""
  if not isinstance(value, (tuple, list)) or len(value) > 64:
    return None
  if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
    return None
  return tuple(value)


def read_torch_checkpoint(path: pathlib.Path) -> dict:
  """`read_torch_state` of a file meant to be a torch zip checkpoint; an empty, truncated or pre-zip
  (pickle) file is a UserError saying which."""
  with open(path, "rb") as f:
    head = f.read(4)
  if not zipfile.is_zipfile(path):
    if not head:
      raise UserError(f"{path}: empty file")
    if head.startswith(b"PK"):
      raise UserError(f"{path}: truncated or corrupt (a zip archive without its end record)")
    if head[:1] == b"\x80":
      raise UserError(
        f"{path}: legacy (pre-zip) torch pickle or a plain pickle; refused (it could run code). "
        "Re-save it with torch>=1.6 torch.save"
      )
    raise UserError(f"{path}: not a torch checkpoint (no zip archive)")
  return read_torch_state(path)


def read_torch_state(path: pathlib.Path) -> dict:
  """The state dict of a torch zip checkpoint (`torch.save`), read without running code: every
  storage and tensor bound-checked (`_WeightsOnlyUnpickler`). UserError for anything else."""
  if not zipfile.is_zipfile(path):
    raise UserError(
      f"{path}: legacy (pre-zip) torch format is not supported; re-save it with "
      "torch>=1.6 or convert it to model.safetensors"
    )
  try:
    with zipfile.ZipFile(path) as archive:
      pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
      if not pkl:
        raise UserError(f"{path}: no data.pkl inside; not a torch checkpoint")
      # torch.save writes every entry uncompressed, so no entry can inflate past the file's own size.
      packed = [i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED]
      if packed:
        raise UserError(
          f"{path}: {len(packed)} zip entries are compressed (e.g. {_line(packed[0])}); torch.save "
          "writes them uncompressed: re-save it with torch.save or convert it to model.safetensors"
        )
      prefix = pkl[0].rsplit("/", 1)[0] if "/" in pkl[0] else ""
      with archive.open(pkl[0]) as f:
        state = _WeightsOnlyUnpickler(f, archive, prefix).load()
  except _Refused as e:
    raise UserError(f"{path}: {_line(e)}") from None
  except (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
    MemoryError,
    zipfile.BadZipFile,
    OSError,
  ) as e:  # a malformed pickle or zip
    raise UserError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {_line(e)})") from None
  if not isinstance(state, dict):
    raise UserError(f"{path}: expected a state dict, found {type(state).__name__}")
  return state


def _open_torch_bin(path: pathlib.Path) -> TensorSource:
  state = read_torch_state(path)
  tensors = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
  return TensorSource(str(path), tensors, tensors.__getitem__, {k: v.shape for k, v in tensors.items()})
