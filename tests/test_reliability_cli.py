"""`python -m stjax.train` under real signals and a second process (issue 21): SIGKILL right after a
checkpoint, two runs on one workdir, SIGTERM/SIGINT mid-run. The tiny ST-LINK config of
tests/fixtures (40 steps, validation and checkpoint every 10) on one CPU device; every interrupted
run, rerun with the same command, ends exactly like the uninterrupted one."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from helpers import TINY_ST_LINK

from stjax.train.loop import TIMING_KEYS

pytestmark = pytest.mark.slow

OVERRIDES = (
  "--config.train.max_steps=40",
  "--config.train.checkpoint_every_steps=10",
  "--config.train.eval_every_steps=10",
)


@pytest.fixture(scope="module")
def env() -> dict:
  """One CPU device; sub-second programs go to the session's XLA cache too (tests/conftest.py), so
  only this module's first run compiles."""
  return {
    **os.environ,
    "XLA_FLAGS": "",
    "JAX_PLATFORMS": "cpu",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
  }


def _command(workdir) -> list[str]:
  return [sys.executable, "-m", "stjax.train", f"--config={TINY_ST_LINK}", f"--workdir={workdir}", *OVERRIDES]


def _run(workdir, env) -> subprocess.CompletedProcess:
  return subprocess.run(_command(workdir), capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def full(tmp_path_factory, env) -> pathlib.Path:
  workdir = tmp_path_factory.mktemp("full")
  r = _run(workdir, env)
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir


def _assert_same_run(got: pathlib.Path, want: pathlib.Path) -> None:
  a, b = (json.loads((d / "results.json").read_text()) for d in (want, got))
  assert (b["test"], b["val"], b["best_step"], b["steps"]) == (
    a["test"],
    a["val"],
    a["best_step"],
    a["steps"],
  )
  drop = lambda d: [
    {k: v for k, v in json.loads(ln).items() if k not in TIMING_KEYS}
    for ln in (d / "metrics.jsonl").read_text().splitlines()
  ]
  assert drop(got) == drop(want)


def _wait_for(condition, proc, what: str) -> None:
  deadline = time.monotonic() + 600
  while not condition():
    assert proc.poll() is None, f"the run ended before {what}"
    assert time.monotonic() < deadline, f"timed out waiting for {what}"
    time.sleep(0.01)


def _steps_logged(workdir) -> int:
  try:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["step"] if lines else 0
  except (FileNotFoundError, json.JSONDecodeError):
    return 0


def test_sigkill_right_after_a_checkpoint_then_rerun(tmp_path, env, full):
  """The issue's repro (kill -9 as soon as step 10 is on disk, then the same command): with the
  old order (best before last) every rerun died in StepAlreadyExistsError."""
  cut = tmp_path / "cut"
  proc = subprocess.Popen(_command(cut), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
  try:
    _wait_for(lambda: (cut / "checkpoints" / "last" / "10").is_dir(), proc, "checkpoint 10")
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  again = _run(cut, env)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "Traceback" not in again.stderr and "at step 10" in again.stdout
  _assert_same_run(cut, full)


def test_two_runs_on_one_workdir(tmp_path, env):
  """While a run trains, the same command on its workdir is refused with the holder's pid and
  host (was: both exit 0 with interleaved metrics.jsonl); the first run is undisturbed."""
  workdir = tmp_path / "run"
  # Long enough to still be training when the second run starts (no early stop).
  command = _command(workdir) + ["--config.train.max_steps=100000", "--config.train.patience=0"]
  first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  try:
    _wait_for(lambda: _steps_logged(workdir) >= 1, first, "the first run's first step")
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert first.poll() is None, "the first run ended too soon"
    os.kill(first.pid, signal.SIGTERM)
  finally:
    out, err = first.communicate(timeout=600)
  assert second.returncode == 2 and "Traceback" not in second.stderr
  assert (
    second.stderr.strip()
    .splitlines()[-1]
    .startswith(
      f"stjax: error: --workdir {workdir}: in use by another training run (pid {first.pid} on host "
    )
  )
  assert first.returncode == 143 and "stjax: stopped by SIGTERM" in err and "error" not in err
  steps = [json.loads(ln)["step"] for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert steps == list(range(1, len(steps) + 1))  # one writer: no interleaved or repeated lines


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_run_saves_exits_and_resumes_bit_identical(tmp_path, env, full, signum, code):
  cut = tmp_path / "cut"
  proc = subprocess.Popen(_command(cut), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  try:
    _wait_for(lambda: _steps_logged(cut) >= 3, proc, "step 3")
    os.kill(proc.pid, signum)
  finally:
    out, err = proc.communicate(timeout=600)
  assert proc.returncode == code, err[-3000:]
  assert "Traceback" not in err and not list(cut.glob("checkpoints/last/*tmp*"))
  last = err.strip().splitlines()[-1]
  name = signal.Signals(signum).name
  assert last.startswith(f"stjax: stopped by {name} at step ") and last.endswith(
    "; run the same command again to resume"
  )
  stopped_at = int(last.split(" at step ")[1].split(";")[0])
  assert 3 <= stopped_at < 40 and (cut / "checkpoints" / "last" / str(stopped_at)).is_dir()
  again = _run(cut, env)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"at step {stopped_at}" in again.stdout
  _assert_same_run(cut, full)
