"""compile_only: the sharded train step compiled for N simulated devices from abstract values.

The per-device argument bytes XLA reports must equal what the shardings imply (state shards +
batch shards, computed here by hand for the batch), and the donated state must be aliased to
the outputs; the child process really runs on the requested device count (re-exec).
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest
from helpers import TINY_ST_LINK, load_config

from stjax.errors import UserError
from stjax.perf import compile_only, sizing, tpu

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = TINY_ST_LINK  # the tiny ST-LINK experiment


def _cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "stjax.compile_only", *args], capture_output=True, text=True, timeout=300, cwd=ROOT
  )


def test_compiles_for_a_mesh_and_reports_consistent_memory():
  out = _cli(f"--config={CONFIG}", "--mesh=data:2,tensor:2", "--config.train.batch_size=8")
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads(out.stdout.strip().splitlines()[-1])
  assert report["devices"] == 4  # the child re-executed with 4 devices (pytest's process has 8)
  assert report["mesh"] == {"data": 2, "fsdp": 1, "nodes": 1, "tensor": 2}
  m = report["memory_per_device"]
  # Batch rows split 2 ways: x, y [4, 12, 8, 1] float32, tod float32 / dow int32 [4, 12].
  assert report["batch_bytes_per_device"] == 2 * (4 * 12 * 8 * 4) + 2 * (4 * 12 * 4)
  assert m["arguments"] == report["state_bytes_per_device"] + report["batch_bytes_per_device"]
  assert m["aliased"] == report["state_bytes_per_device"]  # donated state reused for the new state
  assert report["param_bytes_per_device"] < report["params"] * 4  # tensor-sharded params
  assert m["total"] == m["arguments"] + m["outputs"] - m["aliased"] + m["temp"] + m["generated_code"]
  assert m["temp"] > 0 and report["flops_per_device"] > 0
  assert report["flops_per_step"] == pytest.approx(4 * report["flops_per_device"])
  assert report["fits"] is None and report["hbm_capacity_bytes"] is None  # an estimate: no chip to fit
  assert "per-device memory" in out.stdout and "temp" in out.stdout
  assert (
    "experts=dense" in report["data"] and "leading_sum=xla" in report["data"]
  )  # sized as accelerators run (auto)


def test_bad_arguments_are_one_line_errors(tmp_path):
  out = _cli("--config=configs/st_link_pemsbay.py", "--mesh=model:8")
  assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "--mesh" in out.stderr
  out = _cli("--config=configs/st_link_pemsbay.py")
  assert out.returncode == 2 and "--topology=N" in out.stderr


def test_device_count_parsing():
  assert compile_only.parse_mesh("data:8,tensor:8") == {"data": 8, "tensor": 8}
  assert compile_only.requested_devices(["--config=x", "--mesh=data:8,tensor:8"]) == 64
  assert compile_only.requested_devices(["--topology", "16"]) == 16
  with pytest.raises(UserError, match="disagree"):
    compile_only.requested_devices(["--devices=8", "--mesh=data:4"])
  with pytest.raises(UserError, match="AXIS:SIZE"):
    compile_only.parse_mesh("data:0")


def test_standin_has_the_registry_shape():
  """PEMS-BAY compiles without its files: 325 nodes, 5-minute steps, DCRNN 12 -> 12 windows."""
  from stjax.data import build_data

  config = load_config(ROOT / "configs" / "st_link_pemsbay.py")
  note = sizing.standin_data(config)
  assert "pems-bay" in note and "325 nodes" in note
  bundle = build_data(config.data)
  assert (bundle.spec.num_nodes, bundle.spec.input_len, bundle.spec.output_len) == (325, 12, 12)
  assert bundle.spec.steps_per_day == 288 and len(bundle.splits["train"]) >= config.train.batch_size


# ----------------------------------------------------------------------------------------------
# The real TPU compiler (libtpu, the `tpu` extra) on this CPU machine.

needs_libtpu = pytest.mark.skipif(
  importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed (pip install 'stjax[tpu]')"
)


def test_tpu_names_map_to_chip_grids():
  for name, grid, bounds, chips in (
    ("v5e-1", (1, 1), (1, 1, 1), 1),
    ("v5e:2x4", (2, 4), (2, 4, 1), 8),
    ("v5litepod-16", (4, 4), (2, 2, 1), 16),
    ("v6e-8", (2, 4), (2, 4, 1), 8),
    ("v5p-8", (2, 2, 1), (2, 2, 1), 4),  # v5p-N counts TensorCores: 4 chips
    ("v4-16", (2, 2, 2), (2, 2, 1), 8),
  ):
    t = tpu.parse_tpu(name)
    assert (t.grid, t.chips_per_host_bounds, t.chips) == (grid, bounds, chips), name
  assert tpu.parse_tpu("v5e-8").hbm_bytes == 16 * 2**30 and tpu.parse_tpu("v5p-8").hbm_bytes == 95 * 2**30
  for bad, why in (("v9z-8", "not a TPU topology"), ("v5e-3", "N is one of"), ("v5p:2x2", "3-D chip grids")):
    with pytest.raises(UserError, match=why):
      tpu.parse_tpu(bad)
  out = _cli(f"--config={CONFIG}", "--tpu=v5e-3")
  assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "--tpu" in out.stderr


def test_out_of_memory_messages_and_batch_bisection():
  msg = RuntimeError(
    "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
    "(18.26G) exceeds available HBM (15.75G)."
  )
  assert tpu.is_out_of_memory(msg) and not tpu.is_out_of_memory(RuntimeError("INVALID_ARGUMENT: shape"))
  assert tpu.oom_required_bytes(msg) == int(18.26 * 2**30)
  calls = []

  def fits(b):
    calls.append(b)
    return b <= 100

  assert sizing.largest_batch(fits, 64, 8) == (96, 104)  # multiples of 8
  assert sizing.largest_batch(lambda b: b <= 20, 64, 4) == (20, 24)
  assert sizing.largest_batch(lambda b: False, 64, 8) == (0, 8)


def test_model_flops_count_every_sample():
  """The FLOP count (a CPU lowering with dense attention, no compile) grows with the batch."""
  config = load_config(CONFIG)
  sizing.standin_data(config)
  small, large = sizing.model_flops(config, 8), sizing.model_flops(config, 16)
  assert 1.9 < large / small < 2.0  # per-sample work plus a little batch-independent work


@needs_libtpu
def test_tiny_st_link_compiles_for_a_tpu_slice():
  """The trainer's sharded step for a v5e 2x2 slice with the real TPU compiler: kernels resolve for
  TPU (splash attention under shard_map), the memory report adds up."""
  out = _cli(f"--config={CONFIG}", "--tpu=v5e:2x2", "--config.train.batch_size=8")
  assert out.returncode == 0, out.stderr[-3000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  assert r["backend"] == "tpu" and r["device_kind"] == "TPU v5 lite" and r["devices"] == 4
  assert r["kernels"]["attention"] == "splash" and r["kernels"]["pallas"] == "mosaic"
  m = r["memory_per_device"]
  assert (
    r["hbm_per_device_bytes"]
    == m["arguments"] + m["outputs"] - m["aliased"] + m["temp"] + m["generated_code"]
  )
  assert m["arguments"] >= r["state_bytes_per_device"] + r["batch_bytes_per_device"]  # TPU pads small arrays
  assert m["aliased"] > 0 and m["temp"] > 0 and m["generated_code"] > 0
  assert r["hbm_capacity_bytes"] == 16 * 2**30 and r["fits"] is True
  assert r["headroom_bytes"] == r["hbm_capacity_bytes"] - r["hbm_per_device_bytes"]
  assert r["flops_per_step"] > 0 and r["flops_per_device"] == pytest.approx(r["flops_per_step"] / 4)
  assert "real TPU compiler" in out.stdout and "fits" in out.stdout


SPLASH_FOR_TPU = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from stjax.layers.attention import attend
from stjax.perf import tpu
devices = tpu.topology_devices(tpu.parse_tpu("v5e-1"))
rep = NamedSharding(Mesh(np.array(devices), ("data",)), P())
q = jax.ShapeDtypeStruct((2, 300, 8, 64), jnp.bfloat16, sharding=rep)
kv = jax.ShapeDtypeStruct((2, 300, 2, 64), jnp.bfloat16, sharding=rep)
loss = lambda q, k, v: jnp.sum(attend(q, k, v, causal=True, kernel="splash").astype(jnp.float32))
compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, kv, kv).compile()
text = compiled.as_text()
print(text.count("tpu_custom_call"), compiled.memory_analysis().temp_size_in_bytes)
"""


@needs_libtpu
def test_splash_attention_compiles_for_tpu():
  """Forward and backward of causal GQA splash attention (8 query heads over 2 K/V heads, 300
  tokens padded to 384) compiled by the TPU compiler: Mosaic kernels, no dense score tensor."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}
  out = subprocess.run(
    [sys.executable, "-c", SPLASH_FOR_TPU], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env
  )
  assert out.returncode == 0, out.stderr[-3000:]
  kernels, temp = map(int, out.stdout.split())
  assert kernels >= 3  # forward, dq and dkv kernels
  assert temp < 2 * 8 * 300 * 300 * 4  # far below one float32 [b, heads, q, k] score tensor
