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

from stjax import compile_only
from stjax.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = '''
from stjax import trainer
from stjax.models import st_link


def get_config():
  c = trainer.base_config(st_link.default_config())
  c.data.synthetic.num_nodes = 8
  c.data.synthetic.num_steps = 400
  m = c.model
  m.llm_layers, m.unfrozen_layers, m.trainable = 1, 1, "pfa(1)"
  m.n_embd, m.n_head, m.vocab_size, m.n_positions = 16, 2, 8, 8
  m.patch_len, m.embed_dim, m.temporal_dims = 6, 8, 4
  m.memory_size, m.memory_key_dim, m.memory_top_k, m.expert_hidden = 8, 8, 2, 16
  c.train.batch_size = 8
  return c
'''


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "stjax.compile_only", *args], capture_output=True,
                        text=True, timeout=300, cwd=ROOT)


def test_compiles_for_a_mesh_and_reports_consistent_memory(tmp_path):
  config = tmp_path / "tiny.py"
  config.write_text(CONFIG)
  out = _cli(f"--config={config}", "--mesh=data:2,tensor:2", "--config.train.batch_size=8")
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
  import importlib.util

  from stjax.data import build_data

  spec = importlib.util.spec_from_file_location("cfg", ROOT / "configs" / "st_link_pemsbay.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  note = compile_only.standin_data(config)
  assert "pems-bay" in note and "325 nodes" in note
  bundle = build_data(config.data)
  assert (bundle.spec.num_nodes, bundle.spec.input_len, bundle.spec.output_len) == (325, 12, 12)
  assert bundle.spec.steps_per_day == 288 and len(bundle.splits["train"]) >= config.train.batch_size
