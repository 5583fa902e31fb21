"""Multi-host training proof: 2 processes x 4 CPU devices (one JAX cluster through
launch/local_multiprocess.sh) train a tiny ST-LINK exactly like 1 process x 8 devices and like
1 device, and checkpoints move between the two topologies.

Every run trains 20 steps of the same config (global batch 8 on synthetic data; MRFFN memory
state, dropout and the PFA mask included); `metrics.jsonl` records every step's loss. Each host
reads only its rows of every global batch (stjax.data.pipeline) and the trainer assembles global
arrays with `jax.make_array_from_process_local_data`; only host 0 writes outputs.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import TINY_ST_LINK, load_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 20

CONFIG = TINY_ST_LINK  # the tiny ST-LINK experiment


def _train_cmd(config: pathlib.Path, workdir: pathlib.Path) -> list[str]:
  return [sys.executable, "-m", "stjax.train", f"--config={config}", f"--workdir={workdir}"]


def _run(cmd: list[str], devices: int | None = None) -> str:
  # Sub-second programs go to the session's compilation cache too (tests/conftest.py), so a resumed
  # or repeated run reuses the first one's executables.
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  if devices is not None:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  return out.stdout


def _two_hosts(config, workdir) -> str:
  return _run([str(ROOT / "launch" / "local_multiprocess.sh"), "2", "4"] + _train_cmd(config, workdir))


def _in_process(config, workdir) -> None:
  """1 process x the 8 simulated devices of the test process (tests/conftest.py)."""
  import jax

  from stjax.train.loop import train_and_evaluate

  assert jax.device_count() == 8 and jax.process_count() == 1
  train_and_evaluate(load_config(config), str(workdir))


def _losses(workdir) -> dict[int, float]:
  records = [json.loads(ln) for ln in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["train_loss"] for r in records}


def _crash_after_step_10(src, dst) -> pathlib.Path:
  """A copy of run `src` as if it had died after its step-10 checkpoint."""
  shutil.copytree(src, dst)
  for kind in ("last", "best"):
    shutil.rmtree(dst / "checkpoints" / kind / str(STEPS), ignore_errors=True)
  for name in ("results.json", "results.md"):
    (dst / name).unlink()
  return dst


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("multihost")
  config = CONFIG
  dirs = {name: base / name for name in ("two_hosts", "one_host", "one_device")}
  log = _two_hosts(config, dirs["two_hosts"])
  _in_process(config, dirs["one_host"])
  _run(_train_cmd(config, dirs["one_device"]), devices=1)
  return config, dirs, log


def test_two_hosts_train_like_one_host_and_one_device(runs):
  _, dirs, log = runs
  two, one, single = (_losses(dirs[k]) for k in ("two_hosts", "one_host", "one_device"))
  assert sorted(two) == list(range(1, STEPS + 1))
  for other in (one, single):
    np.testing.assert_allclose(
      [two[s] for s in sorted(two)], [other[s] for s in sorted(two)], rtol=0, atol=1e-5
    )
  assert len(set(np.round(list(two.values()), 3))) > 10  # the loss really moves step to step
  # Both processes joined one 8-device cluster and trained on the 8-device data mesh.
  assert "[0] Model st_link" in log and "'data': 8" in log and "[1] Model st_link" not in log
  # Host 0 alone wrote the outputs, once: one record per step, one results table.
  assert log.count("| MAE | model |") == 1 and log.count("[0] | MAE | model |") == 1
  results = [json.loads((dirs[k] / "results.json").read_text())["test"]["mae"] for k in dirs]
  np.testing.assert_allclose(results, results[0], rtol=1e-4)


def test_checkpoints_move_between_topologies(runs, tmp_path):
  """2-process checkpoint -> 1 process x 8 devices, and 1-device checkpoint -> 2 processes: the
  resumed runs repeat steps 11..20 of the original runs."""
  config, dirs, _ = runs
  from_two = _crash_after_step_10(dirs["two_hosts"], tmp_path / "from_two_hosts")
  _in_process(config, from_two)
  from_one = _crash_after_step_10(dirs["one_device"], tmp_path / "from_one_device")
  log = _two_hosts(config, from_one)
  assert "Resumed from" in log and "at step 10" in log
  for resumed, original in ((from_two, dirs["two_hosts"]), (from_one, dirs["one_device"])):
    got, want = _losses(resumed), _losses(original)
    assert sorted(got) == list(range(1, STEPS + 1))  # steps 1..10 kept, 11..20 re-run
    np.testing.assert_allclose(
      [got[s] for s in range(11, STEPS + 1)], [want[s] for s in range(11, STEPS + 1)], rtol=0, atol=1e-5
    )
    assert (resumed / "results.json").exists()
