"""Test setup: 8 simulated CPU devices (so sharding code runs), shared real data, fresh RNG."""

import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib
import zlib

import numpy as np
import pytest

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
