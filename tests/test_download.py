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
      self.wfile.write(body[start:start + (len(body) - start) // 2])
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
  dest = download.download_file(f"{url}/a.bin", tmp_path / "a.bin", hashlib.sha256(body).hexdigest(), progress=False)
  assert dest.read_bytes() == body and not (tmp_path / "a.bin.part").exists()


def test_wrong_checksum_leaves_nothing(server, tmp_path, rng):
  url, handler = server
  handler.files["/a.bin"] = _payload(rng)
  with pytest.raises(UserError, match=r"a\.bin: sha256 mismatch \(expected 0{64}, got [0-9a-f]{64}\); the download was deleted"):
    download.download_file(f"{url}/a.bin", tmp_path / "a.bin", "0" * 64, progress=False)
  assert list(tmp_path.iterdir()) == []


def test_interrupted_then_resumed_with_range(server, tmp_path, rng):
  url, handler = server
  body = _payload(rng)
  sha = hashlib.sha256(body).hexdigest()
  handler.files["/a.bin"] = body
  handler.cut_first.add("/a.bin")
  with pytest.raises(UserError, match=r"download failed .*interrupted at 150000 of 300000 bytes.*run the command again to resume"):
    download.download_file(f"{url}/a.bin", tmp_path / "a.bin", sha, retries=0, progress=False)
  assert (tmp_path / "a.bin.part").stat().st_size == len(body) // 2 and not (tmp_path / "a.bin").exists()
  download.download_file(f"{url}/a.bin", tmp_path / "a.bin", sha, retries=0, progress=False)
  assert (tmp_path / "a.bin").read_bytes() == body
  assert handler.log == [("/a.bin", None), ("/a.bin", f"bytes={len(body) // 2}-")]
  # With retries (the default) a cut transfer resumes within one call.
  handler.cut_first.add("/a.bin")
  download.download_file(f"{url}/a.bin", tmp_path / "b.bin", sha, progress=False)
  assert (tmp_path / "b.bin").read_bytes() == body and handler.log[-1] == ("/a.bin", f"bytes={len(body) // 2}-")


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
  with pytest.raises(UserError, match=r"dataset nycbike1: NYCBike1\.npz, adj_mx\.npz not found locally; run: python -m stjax.data download nycbike1"):
    registry.resolve("nycbike1")
  # Wrong bytes under the right names: the registry's sha256 rejects them and nothing is kept.
  for f in info.files:
    handler.files[f"/nycbike1/{f.name}"] = b"not the real file"
  with pytest.raises(UserError, match="sha256 mismatch"):
    download.download("nycbike1", progress=False, log=lambda *_: None)
  assert not any((tmp_path / "data" / "nycbike1").iterdir())
  with pytest.raises(UserError, match=r"unknown dataset 'nycbike9' \(known: metr-la, "):
    download.download("nycbike9", progress=False)
  (tmp_path / "data" / "taxi-pick").mkdir()
  (tmp_path / "data" / "taxi-pick" / "dis_tt.csv").write_text("1,0\n0,1\n")  # present: not fetched again
  with pytest.raises(UserError, match=r"dataset taxi-pick: train\.npz, val\.npz, test\.npz have no public direct link; "
                     r"get ST-LLM's preprocessed split .* and put them in .*taxi-pick"):
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
