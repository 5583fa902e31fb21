"""Cluster detection and a real 2-process JAX cluster on CPU through launch/local_multiprocess.sh."""

import pathlib
import subprocess
import sys
import textwrap

import pytest

from stjax import distributed
from stjax.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
  "env, kind",
  [
    ({}, None),
    ({"STJAX_COORDINATOR": "127.0.0.1:1234"}, "explicit"),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, "slurm"),
    ({"TPU_WORKER_HOSTNAMES": "w0"}, None),
    ({"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}, "tpu"),
  ],
)
def test_cluster_kind(env, kind):
  assert distributed.cluster_kind(env) == kind


def test_single_process_does_not_initialize():
  assert distributed.initialize({}) is False


def test_explicit_coordinator_needs_counts():
  with pytest.raises(UserError, match="STJAX_NUM_PROCESSES"):
    distributed.initialize({"STJAX_COORDINATOR": "127.0.0.1:1", "STJAX_NUM_PROCESSES": "two"})


def test_two_processes_form_one_cluster(tmp_path):
  """2 processes x 2 devices: a global array built from process-local data sums across hosts."""
  script = tmp_path / "worker.py"
  script.write_text(
    textwrap.dedent("""
      import numpy as np, jax, jax.numpy as jnp
      from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      from stjax import distributed
      assert distributed.initialize()
      mesh = Mesh(np.array(jax.devices()), ("data",))
      local = np.arange(2, dtype=np.float32) + 2 * jax.process_index()
      x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local)
      total = float(jax.jit(lambda a: jnp.sum(a * a))(x))
      print(f"RESULT {jax.process_index()} {jax.process_count()} {jax.device_count()} {total}")
  """)
  )
  out = subprocess.run(
    [str(ROOT / "launch" / "local_multiprocess.sh"), "2", "2", sys.executable, str(script)],
    capture_output=True,
    text=True,
    timeout=180,
  )
  assert out.returncode == 0, out.stdout + out.stderr
  results = sorted(line.split("RESULT ")[1] for line in out.stdout.splitlines() if "RESULT" in line)
  assert results == ["0 2 4 14.0", "1 2 4 14.0"]  # 0+1+4+9 seen identically by both hosts


def test_launcher_fails_when_a_process_fails(tmp_path):
  out = subprocess.run(
    [
      str(ROOT / "launch" / "local_multiprocess.sh"),
      "2",
      "1",
      sys.executable,
      "-c",
      "import os, sys; sys.exit(int(os.environ['STJAX_PROCESS_ID']))",
    ],
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert out.returncode != 0
