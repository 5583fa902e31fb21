"""compile_only: the sharded train step compiled for N simulated devices from abstract values.

The per-device argument bytes XLA reports must equal what the shardings imply (state shards +
batch shards, computed here by hand for the batch), and the donated state must be aliased to
the outputs; the child process really runs on the requested device count (re-exec).
"""

import json
import pathlib
import subprocess
import sys

import pytest
from helpers import TINY_ST_LINK, load_config

from stjax.errors import UserError
from stjax.perf import compile_only

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
  assert report["flops_total"] == pytest.approx(4 * report["flops_per_device"])
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
  note = compile_only.standin_data(config)
  assert "pems-bay" in note and "325 nodes" in note
  bundle = build_data(config.data)
  assert (bundle.spec.num_nodes, bundle.spec.input_len, bundle.spec.output_len) == (325, 12, 12)
  assert bundle.spec.steps_per_day == 288 and len(bundle.splits["train"]) >= config.train.batch_size
