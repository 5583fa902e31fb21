"""DCRNN `adj_mx.pkl` through a restricted unpickler.

The file is a pickle of `[sensor_ids (list of str), sensor_id_to_ind (dict), adj_mx [N, N]]`
(Python 2, loaded with latin1). A pickle can name any importable callable and have it called on
load, so this unpickler resolves only the handful of globals that rebuild NumPy arrays; anything
else is refused before it is called. Built-in containers (list, dict, tuple, str, bytes, int,
float) need no global and load as usual.
"""

from __future__ import annotations

import io
import pathlib
import pickle

import numpy as np

from stjax.data import paths
from stjax.errors import UserError

# The callables NumPy's own __reduce__ names, looked up from live objects (not by import path, which
# moved from numpy.core to numpy._core in NumPy 2).
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_SCALAR = np.float32(0).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # protocol-5 arrays: _frombuffer(bytes, dtype, shape, order)
_ALLOWED = {
  ("numpy", "ndarray"): np.ndarray,
  ("numpy", "dtype"): np.dtype,
  ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
  ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
  ("numpy.core.multiarray", "scalar"): _SCALAR,
  ("numpy._core.multiarray", "scalar"): _SCALAR,
  ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
  ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
  # Python 3 protocol-2 pickles encode bytes as _codecs.encode(str, "latin1").
  ("_codecs", "encode"): __import__("_codecs").encode,
}
for _name in ("list", "dict", "tuple", "str", "bytes", "int", "float"):
  _ALLOWED[("builtins", _name)] = _ALLOWED[("__builtin__", _name)] = getattr(__import__("builtins"), _name)


class _NumpyOnlyUnpickler(pickle.Unpickler):
  def __init__(self, file, path: str):
    super().__init__(file, encoding="latin1")
    self._path = path

  def find_class(self, module: str, name: str):
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise UserError(
        f"{self._path}: refused to unpickle '{module}.{name}' (only NumPy arrays, lists, "
        "dicts and strings are allowed in a graph pickle)"
      ) from None

  def persistent_load(self, pid):
    raise UserError(f"{self._path}: refused to unpickle a persistent reference")


def safe_load(path: str | pathlib.Path):
  """Unpickles `path` allowing only NumPy arrays and built-in containers/scalars."""
  data = paths.readable_file(path).read_bytes()
  try:
    return _NumpyOnlyUnpickler(io.BytesIO(data), str(path)).load()
  except UserError:
    raise
  except (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    UnicodeDecodeError,
  ) as e:
    raise UserError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None


def read_adj_pkl(path: str | pathlib.Path) -> tuple[tuple[str, ...], np.ndarray]:
  """DCRNN graph pickle -> (sensor ids, adjacency [N, N] float32)."""
  obj = safe_load(path)
  if not (isinstance(obj, (list, tuple)) and len(obj) == 3 and isinstance(obj[2], np.ndarray)):
    raise UserError(f"{path}: expected [sensor_ids, sensor_id_to_ind, adj_mx], got {type(obj).__name__}")
  ids, id_to_ind, adj = obj
  ids = tuple(str(i) for i in ids)
  if adj.ndim != 2 or adj.shape != (len(ids), len(ids)):
    raise UserError(f"{path}: adj_mx has shape {adj.shape} but there are {len(ids)} sensor ids")
  expected = {s: i for i, s in enumerate(ids)}
  if not isinstance(id_to_ind, dict) or {str(k): v for k, v in id_to_ind.items()} != expected:
    raise UserError(f"{path}: sensor_id_to_ind does not match the order of sensor_ids")
  return ids, adj.astype(np.float32)
