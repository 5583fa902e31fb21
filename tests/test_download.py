"""Downloads against a local HTTP server: good file, wrong checksum, cut transfer then Range resume."""

from __future__ import annotations

import hashlib
import http.server
import threading

import numpy as np
import pytest

from stjax.data import download, registry
from stjax.errors import UserError


class _Handler(http.server.BaseHTTPRequestHandler):
  files: dict[str, bytes] = {}
  cut_first: set[str] = set()  # paths whose first full response stops half-way
  log: list[tuple[str, str | None]] = []

  def do_GET(self):
    type(self).log.append((self.path, self.headers.get("Range")))
    body = self.files.get(self.path)
    if body is None:
      self.send_error(404)
      return
    start = 0
    if self.headers.get("Range"):
      start = int(self.headers["Range"].split("=")[1].split("-")[0])
      if start >= len(body):
        self.send_error(416)
        return
      self.send_response(206)
      self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
    else:
      self.send_response(200)
    self.send_header("Content-Length", str(len(body) - start))
    self.end_headers()
    if self.path in self.cut_first:
      self.cut_first.discard(self.path)
      self.wfile.write(body[start : start + (len(body) - start) // 2])
      self.wfile.flush()
      self.close_connection = True
      return
    self.wfile.write(body[start:])

  def log_message(self, *args):
    pass


@pytest.fixture
def server():
  _Handler.files, _Handler.cut_first, _Handler.log = {}, set(), []
  httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
  httpd.shutdown()
  httpd.server_close()


def _payload(rng, size=300_000) -> bytes:
  return rng.integers(0, 256, size, dtype=np.uint8).tobytes()


def test_good_file(server, tmp_path, rng):
  url, handler = server
  body = _payload(rng)
  handler.files["/a.bin"] = body
  dest = download.download_file(
    f"{url}/a.bin", tmp_path / "a.bin", hashlib.sha256(body).hexdigest(), progress=False
  )
  assert dest.read_bytes() == body and not (tmp_path / "a.bin.part").exists()


def test_wrong_checksum_leaves_nothing(server, tmp_path, rng):
  url, handler = server
  handler.files["/a.bin"] = _payload(rng)
  with pytest.raises(
    UserError, match=r"a\.bin: sha256 mismatch \(expected 0{64}, got [0-9a-f]{64}\); the download was deleted"
  ):
    download.download_file(f"{url}/a.bin", tmp_path / "a.bin", "0" * 64, progress=False)
  assert list(tmp_path.iterdir()) == []


def test_interrupted_then_resumed_with_range(server, tmp_path, rng):
  url, handler = server
  body = _payload(rng)
  sha = hashlib.sha256(body).hexdigest()
  handler.files["/a.bin"] = body
  handler.cut_first.add("/a.bin")
  with pytest.raises(
    UserError,
    match=r"download failed .*interrupted at 150000 of 300000 bytes.*run the command again to resume",
  ):
    download.download_file(f"{url}/a.bin", tmp_path / "a.bin", sha, retries=0, progress=False)
  assert (tmp_path / "a.bin.part").stat().st_size == len(body) // 2 and not (tmp_path / "a.bin").exists()
  download.download_file(f"{url}/a.bin", tmp_path / "a.bin", sha, retries=0, progress=False)
  assert (tmp_path / "a.bin").read_bytes() == body
  assert handler.log == [("/a.bin", None), ("/a.bin", f"bytes={len(body) // 2}-")]
  # With retries (the default) a cut transfer resumes within one call.
  handler.cut_first.add("/a.bin")
  download.download_file(f"{url}/a.bin", tmp_path / "b.bin", sha, progress=False)
  assert (tmp_path / "b.bin").read_bytes() == body and handler.log[-1] == (
    "/a.bin",
    f"bytes={len(body) // 2}-",
  )


def test_not_found_is_one_line(server, tmp_path):
  url, _ = server
  with pytest.raises(UserError, match=r"missing\.bin: download failed \(HTTP Error 404"):
    download.download_file(f"{url}/missing.bin", tmp_path / "x", None, progress=False)


def test_registry_download_verify_and_resolve(server, tmp_path, monkeypatch):
  """`download NAME` through the mirror override, then `verify`, with the real sha256 of nycbike1."""
  url, handler = server
  monkeypatch.setenv("STJAX_DATA", str(tmp_path / "data"))
  monkeypatch.setenv("STJAX_SHARED_DATA", str(tmp_path / "no-shared"))
  monkeypatch.setenv("STJAX_DOWNLOAD_MIRROR", url)
  info = registry.get("nycbike1")
  with pytest.raises(
    UserError,
    match=r"dataset nycbike1: NYCBike1\.npz, adj_mx\.npz not found locally; run: python -m stjax.data download nycbike1",
  ):
    registry.resolve("nycbike1")
  # Wrong bytes under the right names: the registry's size and sha256 reject them and nothing is kept.
  for f in info.files:
    handler.files[f"/nycbike1/{f.name}"] = b"not the real file"
  with pytest.raises(UserError, match=r"NYCBike1\.npz: size mismatch \(expected 1287251 bytes, got 17\)"):
    download.download("nycbike1", progress=False, log=lambda *_: None)
  handler.files["/nycbike1/NYCBike1.npz"] = b"x" * 1287251  # the right size, the wrong bytes
  with pytest.raises(UserError, match=r"NYCBike1\.npz: sha256 mismatch"):
    download.download("nycbike1", progress=False, log=lambda *_: None)
  assert not any((tmp_path / "data" / "nycbike1").iterdir())
  with pytest.raises(UserError, match=r"unknown dataset 'nycbike9' \(known: metr-la, "):
    download.download("nycbike9", progress=False)
  (tmp_path / "data" / "taxi-pick").mkdir()
  (tmp_path / "data" / "taxi-pick" / "dis_tt.csv").write_text("1,0\n0,1\n")  # present: not fetched again
  with pytest.raises(
    UserError,
    match=r"dataset taxi-pick: train\.npz, val\.npz, test\.npz have no public direct link; "
    r"get ST-LLM's preprocessed split .* and put them in .*taxi-pick",
  ):
    download.download("taxi-pick", progress=False, log=lambda *_: None)


def test_registry_real_checksums(shared_data, tmp_path, monkeypatch, server):
  """Serves the real staged files: download verifies their published sha256; verify re-hashes."""
  url, handler = server
  info = registry.get("nycbike1")
  for f in info.files:
    handler.files[f"/nycbike1/{f.name}"] = (shared_data / f.shared).read_bytes()
  monkeypatch.setenv("STJAX_DATA", str(tmp_path / "data"))
  monkeypatch.setenv("STJAX_SHARED_DATA", str(tmp_path / "no-shared"))
  monkeypatch.setenv("STJAX_DOWNLOAD_MIRROR", url)
  paths = download.download("nycbike1", progress=False, log=lambda *_: None)
  assert paths["NYCBike1.npz"] == tmp_path / "data" / "nycbike1" / "NYCBike1.npz"
  lines = []
  download.verify("nycbike1", log=lines.append)
  assert lines == [f"{f.name}: ok ({paths[f.name]})" for f in info.files]
  assert registry.load("nycbike1").values.shape == (4392, 128, 2)
  with open(paths["adj_mx.npz"], "r+b") as f:  # flip one byte
    f.seek(100)
    byte = f.read(1)
    f.seek(100)
    f.write(bytes([byte[0] ^ 1]))
  with pytest.raises(UserError, match=r"dataset nycbike1: 1 file\(s\) missing or corrupt: adj_mx\.npz"):
    download.verify("nycbike1", log=lambda *_: None)


def test_registry_entries_are_consistent():
  for info in registry.DATASETS.values():
    names = [f.name for f in info.files]
    assert len(set(names)) == len(names), info.name
    for part in (info.series, info.graph, info.graph_node_ids):
      assert part is None or part in names, (info.name, part)
    for f in info.files:
      assert f.url is None or f.url.startswith("https://"), f
      assert f.sha256 is None or len(f.sha256) == 64
      assert f.url is not None or f.note, f


# ---- files with no recorded checksum (issue 21.3) ----------------------------------------------------


def _h5_bytes(tmp_path) -> bytes:
  import h5py

  with h5py.File(tmp_path / "real.h5", "w") as f:
    f["x"] = np.arange(3)
  return (tmp_path / "real.h5").read_bytes()


@pytest.mark.parametrize(
  "served, dest, size, expected",
  [
    (
      b"\x00\x01\x02\x03",
      "m.h5",
      None,
      r"m\.h5: not a \.h5 file \(only 4 bytes\); the download was deleted "
      r"\(no checksum is recorded for it\)",
    ),
    (
      b"<html><body>rate limited</body></html>",
      "t.npz",
      None,
      r"t\.npz: not a \.npz file \(it starts with b'<html>",
    ),
    (
      b"PK\x03\x04abcd",
      "t.npz",
      100,
      r"t\.npz: size mismatch \(expected 100 bytes, got 8\); the download was deleted",
    ),
  ],
)
def test_unchecksummed_download_refuses_junk(server, tmp_path, served, dest, size, expected):
  url, handler = server
  handler.files[f"/{dest}"] = served
  with pytest.raises(UserError, match=expected):
    download.download_file(f"{url}/{dest}", tmp_path / "out" / dest, None, progress=False, size=size)
  assert list((tmp_path / "out").iterdir()) == []


def test_unchecksummed_files_are_never_verified(server, tmp_path, monkeypatch, rng):
  """A registry entry with a checksummed file, one with only a size, one with neither."""
  url, handler = server
  graph = _payload(rng, 1000)
  h5 = _h5_bytes(tmp_path)
  toy = registry.DatasetInfo(
    "toy",
    "test entry",
    3,
    3,
    5,
    "dcrnn",
    "s.h5",
    "g.bin",
    (
      registry.RemoteFile("s.h5", "https://example.invalid/s.h5"),
      registry.RemoteFile(
        "g.bin", "https://example.invalid/g.bin", hashlib.sha256(graph).hexdigest(), len(graph)
      ),
      registry.RemoteFile("e.npz", "https://example.invalid/e.npz", size=6),
    ),
  )
  monkeypatch.setitem(registry.DATASETS, "toy", toy)
  monkeypatch.setenv("STJAX_DATA", str(tmp_path / "data"))
  monkeypatch.setenv("STJAX_SHARED_DATA", str(tmp_path / "no-shared"))
  monkeypatch.setenv("STJAX_DOWNLOAD_MIRROR", url)
  handler.files.update({"/toy/s.h5": h5, "/toy/g.bin": graph, "/toy/e.npz": b"PK\x03\x04ab"})
  lines = []
  paths = download.download("toy", progress=False, log=lines.append)
  assert lines == [
    f"s.h5: downloaded to {paths['s.h5']} (unverified: no checksum recorded)",
    f"g.bin: downloaded to {paths['g.bin']}",
    f"e.npz: downloaded to {paths['e.npz']} (unverified: no checksum recorded)",
  ]
  lines = []
  with pytest.raises(UserError) as e:
    download.verify("toy", log=lines.append)
  assert str(e.value) == "dataset toy: 2 file(s) unverified, no checksum recorded: s.h5, e.npz"
  assert lines == [
    f"s.h5: unverified: no checksum recorded ({paths['s.h5']}, {len(h5)} bytes, "
    f"sha256 {hashlib.sha256(h5).hexdigest()})",
    f"g.bin: ok ({paths['g.bin']})",
    f"e.npz: unverified: no checksum recorded ({paths['e.npz']}, 6 bytes, the registry's size, "
    f"sha256 {hashlib.sha256(b'PK' + bytes([3, 4]) + b'ab').hexdigest()})",
  ]
  # The case: a 4-byte file in place of the series, and a wrong size, are corrupt, not unverified.
  paths["s.h5"].write_bytes(b"\x00\x01\x02\x03")
  paths["e.npz"].write_bytes(b"PK\x03\x04abc")
  lines = []
  with pytest.raises(UserError, match=r"^dataset toy: 2 file\(s\) missing or corrupt: s\.h5, e\.npz$"):
    download.verify("toy", log=lines.append)
  assert lines[0] == f"s.h5: BAD, not a .h5 file (only 4 bytes) ({paths['s.h5']})"
  assert lines[2] == f"e.npz: BAD size 7, expected 6 ({paths['e.npz']})"


def test_registry_checksums_match_the_staged_copies(shared_data):
  """Every registry file present in the real-data folder (byte copies of the public files)
  has its sha256 and size recorded, and they match; the files with none are exactly the unstaged ones."""
  unchecked = []
  for info in registry.DATASETS.values():
    for f in info.files:
      if f.shared and (shared_data / f.shared).is_file():
        data = (shared_data / f.shared).read_bytes()
        assert (f.sha256, f.size) == (hashlib.sha256(data).hexdigest(), len(data)), (info.name, f.name)
      elif f.url is not None:
        assert f.sha256 is None and f.size is None, (info.name, f.name)  # nothing to check it against
        unchecked.append(f"{info.name}/{f.name}")
  assert unchecked == [
    "metr-la/metr-la.h5",
    "pems-bay/pems-bay.h5",
    "nyctaxi-grid/NYCTaxi.npz",
    "nyctaxi-grid/adj_mx.npz",
  ]
