"""Hub ids end to end, without network: `python -m stjax.convert {gpt2,bert} --source=ORG/NAME` against a
local mirror of the Hugging Face Hub API (HF_ENDPOINT), in a subprocess with a fresh HF_HOME.

The mirror answers what huggingface_hub's snapshot_download asks: repo info
(/api/models/ID/revision/REV: sha, siblings), the file tree (/api/models/ID/tree/REV), and
HEAD/GET /ID/resolve/REV/FILE (X-Repo-Commit, ETag, Content-Length; weights as LFS files, redirected
with X-Linked-Etag/X-Linked-Size to a second "CDN" server that honours Range). Unknown repos get the
hub's 404 + X-Error-Code: RepoNotFound. The converted checkpoints must match PyTorch.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import urllib.parse

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from stjax.convert import hf_bert, hf_gpt2  # noqa: E402
from stjax.models.backbones.bert import Bert  # noqa: E402
from stjax.models.backbones.gpt2 import GPT2  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
LFS = (".safetensors", ".bin")  # stored with git LFS on the hub: served through the CDN redirect

_ROUTES = [
  ("info", re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)")),
  ("tree", re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)")),
  ("resolve", re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)")),
  ("blob", re.compile(r"/blobs/(?P<sha>[0-9a-f]{64})")),
]


def _git_oid(data: bytes) -> str:
  return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
  """One hub repository: its files and the commit they are at."""

  def __init__(self, folder: pathlib.Path):
    self.files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
    self.sha256 = {name: hashlib.sha256(data).hexdigest() for name, data in self.files.items()}
    self.commit = hashlib.sha1("".join(self.sha256.values()).encode()).hexdigest()

  def tree_entry(self, name: str) -> dict:
    data = self.files[name]
    entry = {"type": "file", "oid": _git_oid(data), "size": len(data), "path": name}
    if name.endswith(LFS):
      entry["lfs"] = {"oid": self.sha256[name], "size": len(data), "pointerSize": 134}
    return entry


class _Hub(http.server.BaseHTTPRequestHandler):
  repos: dict[str, Repo]
  log: list[tuple[str, str]]
  cdn: str  # origin of the server the LFS redirects point to

  def do_HEAD(self):
    self._serve(body=False)

  def do_GET(self):
    self._serve(body=True)

  def _serve(self, body: bool):
    path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
    self.log.append((self.command, path))
    for route, pattern in _ROUTES:
      if m := pattern.fullmatch(path):
        return getattr(self, f"_{route}")(body=body, **m.groupdict())
    self._error(404, "Not Found")

  def _repo(self, repo: str, rev: str) -> Repo | None:
    if repo not in self.repos:
      self._error(404, "Repository not found", code="RepoNotFound")
      return None
    if rev not in ("main", self.repos[repo].commit):
      self._error(404, "Invalid rev id", code="RevisionNotFound")
      return None
    return self.repos[repo]

  def _info(self, repo, rev, body):
    if r := self._repo(repo, rev):
      siblings = [{"rfilename": name} for name in r.files]
      self._send(200, json.dumps({"id": repo, "sha": r.commit, "private": False, "siblings": siblings}), body)

  def _tree(self, repo, rev, body):
    if r := self._repo(repo, rev):
      self._send(200, json.dumps([r.tree_entry(name) for name in r.files]), body)

  def _resolve(self, repo, rev, file, body):
    if not (r := self._repo(repo, rev)):
      return
    if file not in r.files:
      return self._error(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": r.commit})
    entry = r.tree_entry(file)
    headers = {"X-Repo-Commit": r.commit, "ETag": f'"{entry["oid"]}"'}
    if "lfs" not in entry:
      return self._send(200, r.files[file], body, headers)
    headers.update(
      {
        "Location": f"{self.cdn}/blobs/{r.sha256[file]}",
        "X-Linked-Etag": f'"{r.sha256[file]}"',
        "X-Linked-Size": str(len(r.files[file])),
      }
    )
    self._send(302, b"", body, headers)

  def _blob(self, sha, body):
    data = next((d for r in self.repos.values() for n, d in r.files.items() if r.sha256[n] == sha), None)
    if data is None:
      return self._error(404, "Not Found")
    if m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
      start = int(m.group(1))
      if start >= len(data):
        return self._error(416, "Range Not Satisfiable")
      headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
      return self._send(206, data[start:], body, headers)
    self._send(200, data, body, {"ETag": f'"{sha}"'})

  def _error(self, status, message, code=None, headers=None):
    headers = dict(headers or {}, **{"X-Error-Message": message}, **({"X-Error-Code": code} if code else {}))
    self._send(status, json.dumps({"error": message}), True, headers)

  def _send(self, status, data, body, headers=None):
    data = data.encode() if isinstance(data, str) else data
    self.send_response(status)
    for key, value in (headers or {}).items():
      self.send_header(key, value)
    if data[:1] in (b"{", b"["):
      self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    if body and self.command != "HEAD":
      self.wfile.write(data)

  def log_message(self, *args):
    pass


@pytest.fixture(scope="module")
def hub():
  """(HF_ENDPOINT, handler class): a hub server and a CDN server, one request log."""
  handler = type("Hub", (_Hub,), {"repos": {}, "log": []})
  servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(2)]
  for s in servers:
    threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
  handler.cdn = f"http://127.0.0.1:{servers[1].server_address[1]}"
  yield f"http://127.0.0.1:{servers[0].server_address[1]}", handler
  for s in servers:
    s.shutdown()
    s.server_close()


def _randomise(model, seed):
  """Weights far from init (LayerNorm scales around 1, biases non-zero) so every tensor matters."""
  gen = torch.Generator().manual_seed(seed)
  norms = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(1.0 + 0.3 * noise if name in norms else 0.15 * noise)
  return model.eval()


@pytest.fixture(scope="module")
def models(hub, tmp_path_factory):
  """Tiny random GPT-2 and BERT saved with save_pretrained (config.json + model.safetensors), and the
  GPT-2 again as an old-style repo (config.json + pytorch_model.bin); each with a README.md on the hub."""
  gpt2 = transformers.GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_head=4, n_layer=2)
  bert = transformers.BertConfig(
    vocab_size=50,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=64,
  )
  out = {}
  for seed, (family, model) in enumerate(
    [("gpt2", transformers.GPT2Model(gpt2)), ("bert", transformers.BertModel(bert))]
  ):
    folder = tmp_path_factory.mktemp(family)
    _randomise(model, seed).save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    out[f"tiny-org/tiny-{family}"] = family, model, folder
  bin_folder = tmp_path_factory.mktemp("gpt2_bin")
  (bin_folder / "config.json").write_bytes((out["tiny-org/tiny-gpt2"][2] / "config.json").read_bytes())
  torch.save(out["tiny-org/tiny-gpt2"][1].state_dict(), bin_folder / "pytorch_model.bin")
  out["tiny-org/tiny-gpt2-bin"] = "gpt2", out["tiny-org/tiny-gpt2"][1], bin_folder
  for repo_id, (_, _, folder) in out.items():
    (folder / "README.md").write_text("# not a weight file: never downloaded\n")
    hub[1].repos[repo_id] = Repo(folder)
  return out


def _convert(hub_url: str, tmp_path: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
  """`python -m stjax.convert ARGS` with HF_ENDPOINT at the mirror, a fresh HF_HOME, online."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
  env.update(
    HF_ENDPOINT=hub_url,
    HF_HOME=str(tmp_path / "hf_home"),
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    NO_PROXY="127.0.0.1",
    no_proxy="127.0.0.1",
    JAX_PLATFORMS="cpu",
    PYTHONPATH=str(ROOT),
  )
  cmd = [sys.executable, "-m", "stjax.convert", *args]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("repo_id", ["tiny-org/tiny-gpt2", "tiny-org/tiny-bert", "tiny-org/tiny-gpt2-bin"])
def test_hub_id_converts_and_matches_pytorch(hub, models, repo_id, tmp_path, rng):
  """safetensors repos, and the pytorch_model.bin fallback (a second snapshot_download)."""
  url, handler = hub
  family, model, _ = models[repo_id]
  repo = handler.repos[repo_id]
  weights = "pytorch_model.bin" if repo_id.endswith("-bin") else "model.safetensors"
  start = len(handler.log)
  out_dir = tmp_path / "ckpt"
  run = _convert(url, tmp_path, family, f"--source={repo_id}", f"--output={out_dir}")
  assert run.returncode == 0, run.stderr
  assert f"converted {repo_id}: " in run.stdout and str(out_dir) in run.stdout

  # The files came from the mirror (weights through the CDN redirect) into the fresh HF_HOME cache.
  log = handler.log[start:]
  assert ("GET", f"/api/models/{repo_id}/revision/main") in log
  assert ("GET", f"/{repo_id}/resolve/{repo.commit}/config.json") in log
  assert ("GET", f"/blobs/{repo.sha256[weights]}") in log
  assert not any("README" in path for _, path in log)  # allow_patterns: config and weights only
  cache = tmp_path / "hf_home" / "hub" / f"models--{repo_id.replace('/', '--')}"
  got_files = {p.name: p.read_bytes() for p in (cache / "snapshots" / repo.commit).iterdir()}
  assert got_files == {name: repo.files[name] for name in ("config.json", weights)}

  x = rng.standard_normal((2, 64, 32)).astype(np.float32)
  ids = rng.integers(0, 50, (2, 64))
  with torch.no_grad():
    if family == "gpt2":
      want = model(inputs_embeds=torch.from_numpy(x)).last_hidden_state.numpy()
      config, params = hf_gpt2.load(out_dir)
      got = GPT2(config).apply({"params": params}, jnp.asarray(x))
    else:
      want = model(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
      config, params = hf_bert.load(out_dir)
      got = Bert(config).apply({"params": params}, None, input_ids=jnp.asarray(ids))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


def test_unknown_repo_is_one_line_nothing_written(hub, models, tmp_path):
  url, handler = hub
  out_dir = tmp_path / "ckpt"
  run = _convert(url, tmp_path, "gpt2", "--source=tiny-org/no-such-model", f"--output={out_dir}")
  assert run.returncode == 2, run.stderr
  lines = run.stderr.strip().splitlines()
  assert len(lines) == 1, run.stderr
  assert lines[0].startswith(
    "stjax: error: tiny-org/no-such-model: no such folder, and no such Hugging Face hub repository"
  ), run.stderr
  assert ("GET", "/api/models/tiny-org/no-such-model/revision/main") in handler.log
  assert not out_dir.exists()
