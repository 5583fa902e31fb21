"""Hostile weight files: crafted pytorch_model.bin zip-pickles and safetensors files are one UserError
line each, never a crash or a read past a buffer; well-formed files still read as torch reads them."""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest
from helpers import assert_one_line

from stjax.convert import weights_io
from stjax.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
GPT2_CONFIG = dict(
  model_type="gpt2", architectures=["GPT2Model"], vocab_size=13, n_positions=16, n_embd=8, n_head=2, n_layer=1
)


# ---- torch's zip format, written by hand (no torch needed) ------------------------------------------


def _p(value) -> bytes:
  """Pickle opcodes that push `value` (a str, int, bool or tuple of them)."""
  return pickle.dumps(value, protocol=2)[2:-1]


def _global(module: str, name: str) -> bytes:
  return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def storage(storage_type="FloatStorage", key="0", numel=4) -> bytes:
  """Opcodes of a persistent storage reference, as torch.save writes it."""
  type_ops = _global("torch", storage_type) if isinstance(storage_type, str) else _p(storage_type)
  return b"(" + _p("storage") + type_ops + _p(key) + _p("cpu") + _p(numel) + b"tQ"


def tensor(storage_ops: bytes, offset=0, size=(4,), stride=(1,)) -> bytes:
  """Opcodes of torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
  return (
    _global("torch._utils", "_rebuild_tensor_v2")
    + b"("
    + storage_ops
    + _p(offset)
    + _p(size)
    + _p(stride)
    + _p(False)
    + _global("collections", "OrderedDict")
    + b")R"
    + b"tR"
  )


def write_torch_bin(
  folder,
  tensors: dict[str, bytes],
  storages: dict[str, bytes],
  compress=zipfile.ZIP_STORED,
  pickle_bytes: bytes | None = None,
):
  """`folder/pytorch_model.bin` in torch.save's layout: archive/data.pkl, archive/data/<key>, ..."""
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "config.json").write_text(json.dumps(GPT2_CONFIG))
  body = b"\x80\x02}(" + b"".join(_p(name) + ops for name, ops in tensors.items()) + b"u."
  with zipfile.ZipFile(folder / weights_io.TORCH_BIN, "w", compression=compress) as z:
    z.writestr("archive/data.pkl", body if pickle_bytes is None else pickle_bytes)
    z.writestr("archive/byteorder", "little")
    for key, raw in storages.items():
      z.writestr(f"archive/data/{key}", raw)
    z.writestr("archive/version", "3\n")
  return folder / weights_io.TORCH_BIN


def test_hand_written_bin_reads_as_torch_reads_it(tmp_path):
  f32 = np.arange(12, dtype=np.float32)
  bf16 = np.linspace(-2, 2, 6).astype(ml_dtypes.bfloat16)
  path = write_torch_bin(
    tmp_path,
    {
      "transposed": tensor(storage(numel=12), offset=2, size=(2, 3), stride=(1, 2)),
      "whole": tensor(storage(numel=12), size=(12,), stride=(1,)),
      "tied": tensor(storage(numel=12), size=(12,), stride=(1,)),
      "position_ids": tensor(storage(numel=12), size=(1, 12), stride=(0, 1)),  # torch.arange(n).expand(1, -1)
      "empty": tensor(storage(numel=12), offset=12, size=(0, 3), stride=(3, 1)),
      "half": tensor(storage("BFloat16Storage", "1", 6), size=(6,), stride=(1,)),
    },
    {"0": f32.tobytes(), "1": bf16.tobytes()},
  )
  source = weights_io.open_weights(tmp_path)
  np.testing.assert_array_equal(source.read("transposed"), [[2, 4, 6], [3, 5, 7]])
  np.testing.assert_array_equal(source.read("position_ids"), f32[None])
  assert source.read("tied") is source.read("whole")  # one array for one view, as torch shares it
  assert source.shapes["empty"] == (0, 3) and source.read("half").dtype == ml_dtypes.bfloat16
  torch = pytest.importorskip("torch")
  reference = torch.load(path, weights_only=True)
  for name in source.names:
    np.testing.assert_array_equal(source.read(name).astype(np.float32), reference[name].float().numpy(), name)


BAD_BINS = {
  # name: (tensors, storages, expected text)
  "past_end_64": (
    {"w": tensor(storage(numel=1), size=(64,))},
    {"0": bytes(4)},
    "tensor of size (64,), stride (1,), offset 0 reaches past its storage of 1 elements",
  ),
  "offset_past_end": ({"w": tensor(storage(numel=8), offset=5, size=(4,))}, {"0": bytes(32)}, "reaches past"),
  "huge_stride": (
    {"w": tensor(storage(numel=8), size=(2,), stride=(2**40,))},
    {"0": bytes(32)},
    "reaches past",
  ),
  "negative_stride": (
    {"w": tensor(storage(numel=8), offset=7, size=(8,), stride=(-1,))},
    {"0": bytes(32)},
    "negative size or stride",
  ),
  "negative_size": ({"w": tensor(storage(numel=8), size=(-4,))}, {"0": bytes(32)}, "negative size or stride"),
  "negative_offset": ({"w": tensor(storage(numel=8), offset=-4)}, {"0": bytes(32)}, "bad tensor layout"),
  "rank_mismatch": (
    {"w": tensor(storage(numel=8), size=(2, 2), stride=(1,))},
    {"0": bytes(32)},
    "bad tensor layout",
  ),
  "float_size": ({"w": tensor(storage(numel=8), size=(2.0,))}, {"0": bytes(32)}, "bad tensor layout"),
  "count_overflow": (
    {"w": tensor(storage(numel=1), size=(2**62, 2**62), stride=(0, 0))},
    {"0": bytes(4)},
    "more than 4x the 4 bytes of its storages",
  ),
  "zero_stride_blowup": (
    {"w": tensor(storage(numel=1), size=(10**9,), stride=(0,))},
    {"0": bytes(4)},
    "more than 4x",
  ),
  "many_views": (
    {f"w{i}": tensor(storage(numel=64), offset=i, size=(32,)) for i in range(16)},
    {"0": bytes(256)},
    "more than 4x the 256 bytes",
  ),
  "numel_vs_entry": (
    {"w": tensor(storage(numel=100))},
    {"0": bytes(16)},
    "storage '0' holds 16 bytes, but the pickle says 100 x 4-byte FloatStorage elements",
  ),
  "ragged_entry": ({"w": tensor(storage(numel=1), size=(1,))}, {"0": bytes(5)}, "holds 5 bytes"),
  "missing_entry": (
    {"w": tensor(storage(key="7"))},
    {"0": bytes(16)},
    "storage '7' has no entry 'archive/data/7'",
  ),
  "unknown_storage": (
    {"w": tensor(storage("EvilStorage"))},
    {"0": bytes(16)},
    "refusing to unpickle torch.EvilStorage",
  ),
  "storage_type_not_name": ({"w": tensor(storage(7))}, {"0": bytes(16)}, "unknown storage type 7"),
  "two_dtypes": (
    {"a": tensor(storage(numel=4)), "b": tensor(storage("IntStorage", numel=4))},
    {"0": bytes(16)},
    "storage '0' is referenced as 4 IntStorage elements and as 4 float32 elements",
  ),
  "not_a_storage": ({"w": tensor(_p(12345))}, {}, "rebuilt from something that is not a storage"),
  "bad_persistent_id": ({"w": tensor(_p(("storage", "x")) + b"Q")}, {}, "unknown persistent id"),
  "key_with_newline": (
    {"w": tensor(storage(key="0\nstjax: error: forged"))},
    {"0": bytes(16)},
    "has no entry",
  ),
  "os_system": (
    {"w": _global("os", "system") + _p(("echo pwned",)) + b"R"},
    {},
    "refusing to unpickle os.system",
  ),
}


_READ_ALL = """
import json, pathlib, sys
from stjax.convert import weights_io
from stjax.errors import UserError
for folder in sys.argv[1:]:
  try:
    source = weights_io.open_weights(pathlib.Path(folder))
    result = {"read": [source.read(name).shape for name in sorted(source.names)]}
  except UserError as e:
    result = {"error": str(e)}
  print(json.dumps(dict(result, folder=folder)), flush=True)
"""


@pytest.fixture(scope="module")
def hostile_bin_results(tmp_path_factory):
  """Each BAD_BINS case read (open_weights + every tensor) in one child process, so that a crash
  cannot take pytest down: case -> {"error": message} or {"read": shapes}; the child's exit too."""
  root = tmp_path_factory.mktemp("hostile_bins")
  for case, (tensors, storages, _) in BAD_BINS.items():
    write_torch_bin(root / case, tensors, storages)
  proc = subprocess.run(
    [sys.executable, "-c", _READ_ALL, *(str(root / c) for c in BAD_BINS)],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=ROOT,
  )
  results = {pathlib.Path(r.pop("folder")).name: r for r in map(json.loads, proc.stdout.splitlines())}
  return root, results, proc


@pytest.mark.parametrize("case", sorted(BAD_BINS))
def test_hostile_bin_is_one_error_line(hostile_bin_results, case):
  root, results, proc = hostile_bin_results
  assert case in results, f"the child died before this case (exit {proc.returncode}): {proc.stderr[-2000:]}"
  message = results[case].get("error", f"no error; read {results[case].get('read')}")
  assert "\n" not in message and str(root / case / weights_io.TORCH_BIN) in message, message
  assert BAD_BINS[case][2] in message, message


@pytest.mark.parametrize(
  "case", ["garbage_pickle", "truncated_pickle", "bad_crc", "compressed", "not_a_dict", "wrong_arity"]
)
def test_malformed_bin_is_one_error_line(tmp_path, case):
  good = {"w": tensor(storage())}
  expected = "not a readable torch checkpoint"
  if case == "garbage_pickle":
    path = write_torch_bin(tmp_path, good, {"0": bytes(16)}, pickle_bytes=b"\x80\x02\xff\xfe garbage")
  elif case == "truncated_pickle":
    body = b"\x80\x02}(" + _p("w") + good["w"] + b"u."
    path = write_torch_bin(tmp_path, good, {"0": bytes(16)}, pickle_bytes=body[: len(body) // 2])
  elif case == "bad_crc":
    path = write_torch_bin(tmp_path, good, {"0": b"\x11" * 16})
    data = path.read_bytes()
    path.write_bytes(data.replace(b"\x11" * 16, b"\x12" * 16))
    expected = "BadZipFile: Bad CRC-32"
  elif case == "compressed":
    path = write_torch_bin(tmp_path, good, {"0": bytes(16)}, compress=zipfile.ZIP_DEFLATED)
    expected = "zip entries are compressed"
  elif case == "not_a_dict":
    path = write_torch_bin(tmp_path, {}, {}, pickle_bytes=pickle.dumps([1, 2], protocol=2))
    expected = "expected a state dict, found list"
  else:  # _rebuild_tensor_v2 called with too few arguments
    ops = _global("torch._utils", "_rebuild_tensor_v2") + b"(" + storage() + b"tR"
    path = write_torch_bin(tmp_path, {"w": ops}, {"0": bytes(16)})
  with pytest.raises(UserError) as e:
    weights_io.open_weights(tmp_path)
  assert_one_line(e, str(path), expected)


def test_segfaulting_bin_exits_with_one_line(tmp_path):
  """The issue's crash: 5e7 float32 elements viewed over a 4-byte storage (SIGSEGV before the fix).

  Run through the convert CLI in a child process, so a crash cannot take pytest down with it.
  """
  folder = tmp_path / "hostile"
  write_torch_bin(
    folder, {"h.0.attn.c_attn.weight": tensor(storage(numel=1), size=(50_000_000,))}, {"0": bytes(4)}
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "-m", "stjax.convert", "gpt2", f"--source={folder}", f"--output={tmp_path / 'out'}"],
    capture_output=True,
    text=True,
    timeout=300,
    env=env,
    cwd=ROOT,
  )
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  lines = proc.stderr.strip().splitlines()
  assert (
    len(lines) == 1 and lines[0].startswith("stjax: error:") and "reaches past its storage" in lines[0]
  ), lines
  assert not (tmp_path / "out").exists()


# ---- safetensors, written by hand -------------------------------------------------------------------


def write_safetensors(path, header: dict | bytes, data: bytes = b"", header_len: int | None = None):
  raw = header if isinstance(header, bytes) else json.dumps(header).encode()
  path.write_bytes(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data)
  return path


def _t(dtype="F32", shape=(4,), offsets=(0, 16)) -> dict:
  return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


BAD_SAFETENSORS = {
  # Checked by the safetensors library itself (this test pins that it still is):
  "offsets_past_data": ({"w": _t(shape=(8,), offsets=(0, 32))}, bytes(16), None, "incomplete metadata"),
  "begin_after_end": ({"w": _t(shape=(0,), offsets=(16, 0))}, bytes(16), None, "invalid offset"),
  "length_not_shape": ({"w": _t(shape=(2,))}, bytes(16), None, "invalid shape, data type, or offset"),
  "overlapping": ({"a": _t(), "b": _t()}, bytes(16), None, "invalid offset"),
  "shape_overflow": ({"w": _t(shape=(2**62, 2**62))}, bytes(16), None, "overflow"),
  "negative_shape": ({"w": _t(shape=(-4,))}, bytes(16), None, "invalid JSON in header"),
  "unknown_dtype": ({"w": _t(dtype="Q99")}, bytes(16), None, "unknown variant `Q99`"),
  "header_too_large": ({}, b"", 2**62, "header too large"),
  "header_past_file": ({"w": _t()}, bytes(16), 10**6, "invalid header length"),
  "header_not_json": (b"\x00garbage", b"", None, "invalid JSON in header"),
  "header_not_object": (b"[1, 2]", b"", None, "invalid JSON in header"),
  "empty_file": (b"", b"", 0, "invalid JSON in header"),
  # Added here (NumPy has no such dtype; safetensors raises AttributeError while reading it):
  "float8": (
    {"w": _t(dtype="F8_E4M3", shape=(16,))},
    bytes(16),
    None,
    "has dtype F8_E4M3, which NumPy cannot read",
  ),
  "float4": ({"w": _t(dtype="F4", shape=(32,))}, bytes(16), None, "has dtype F4"),
  "name_with_newline": (
    {"w\nstjax: error: forged": _t(dtype="F8_E5M2", shape=(16,))},
    bytes(16),
    None,
    "tensor 'w\\nstjax: error: forged' has dtype F8_E5M2",
  ),
}


@pytest.mark.parametrize("case", sorted(BAD_SAFETENSORS))
def test_hostile_safetensors_is_one_error_line(tmp_path, case):
  header, data, header_len, expected = BAD_SAFETENSORS[case]
  path = write_safetensors(tmp_path / weights_io.SAFETENSORS, header, data, header_len)
  with pytest.raises(UserError) as e:
    weights_io.open_weights(tmp_path)
  assert_one_line(e, str(path), expected)


def test_too_short_safetensors(tmp_path):
  (tmp_path / weights_io.SAFETENSORS).write_bytes(b"ab")
  with pytest.raises(UserError) as e:
    weights_io.open_weights(tmp_path)
  assert_one_line(e, "not a readable safetensors file", "header too small")


def test_hand_written_safetensors_reads(tmp_path):
  values = np.arange(4, dtype=np.float32)
  bf16 = np.array([1.5, -2.0], ml_dtypes.bfloat16)
  write_safetensors(
    tmp_path / weights_io.SAFETENSORS,
    {"__metadata__": {"format": "pt"}, "w": _t(), "b": _t("BF16", (2,), (16, 20))},
    values.tobytes() + bf16.tobytes(),
  )
  source = weights_io.open_weights(tmp_path)
  np.testing.assert_array_equal(source.read("w"), values)
  np.testing.assert_array_equal(source.read("b"), bf16)


@pytest.mark.parametrize(
  "weight_map, expected",
  [
    ({"w": "../outside.safetensors"}, "shard '../outside.safetensors' is not a file name in the folder"),
    ({"w": "/etc/passwd"}, "shard '/etc/passwd' is not a file name"),
    ({"w": ["a", "b"]}, "weight_map is not a mapping of tensor names to shard file names"),
    (["w"], "weight_map is not a mapping"),
  ],
)
def test_hostile_safetensors_index(tmp_path, weight_map, expected):
  (tmp_path / weights_io.SAFETENSORS_INDEX).write_text(json.dumps({"weight_map": weight_map}))
  with pytest.raises(UserError) as e:
    weights_io.open_weights(tmp_path)
  assert_one_line(e, weights_io.SAFETENSORS_INDEX, expected)
