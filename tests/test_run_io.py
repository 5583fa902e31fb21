"""The run folder's building blocks: metrics.jsonl appends and torn lines, TensorBoard records,
the workdir lock, graceful signals, and schedules that fit the run (issue 21)."""

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event

from stjax.errors import UserError
from stjax.train import jsonl, optim, scalars, signals, workdir_lock


def test_jsonl_tolerates_and_trims_a_torn_last_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  jsonl.append(path, {"step": 1, "loss": 0.5})
  jsonl.append(path, {"step": 2, "loss": 0.25})
  with open(path, "ab") as f:  # a crash (or full disk) halfway through the third line
    f.write(b'{"step": 3, "lo')
  assert jsonl.read(path) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]
  jsonl.append(path, {"step": 3, "loss": 0.125})  # the torn tail goes, the new line is whole
  assert path.read_text().splitlines()[-1] == '{"step": 3, "loss": 0.125}'
  assert [r["step"] for r in jsonl.read(path)] == [1, 2, 3]
  with open(path, "ab") as f:
    f.write(b'{"step": 4, "loss": 0.0')
  jsonl.truncate_after(path, 2)  # what a resume from step 2 does
  assert path.read_text() == '{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.25}\n'
  path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')  # damage in the middle is not a torn tail
  with pytest.raises(UserError, match=r"metrics\.jsonl:2: not a JSON record"):
    jsonl.read(path)


@pytest.mark.parametrize("failure", ["short write", "ENOSPC", "EROFS"])
def test_jsonl_append_that_fails_leaves_the_file_as_it_was(tmp_path, monkeypatch, failure):
  path = tmp_path / "metrics.jsonl"
  jsonl.append(path, {"step": 1})
  before = path.read_bytes()
  real = os.pwrite

  def pwrite(fd, data, offset):
    if failure == "short write":  # half the line reaches the disk, then it is full
      return real(fd, data[: len(data) // 2], offset)
    real(fd, data[:5], offset)
    code = errno.ENOSPC if failure == "ENOSPC" else errno.EROFS
    raise OSError(code, os.strerror(code))

  monkeypatch.setattr(os, "pwrite", pwrite)
  with pytest.raises(UserError) as e:
    jsonl.append(path, {"step": 2, "train_loss": 1.0})
  assert "\n" not in str(e.value) and str(e.value).startswith(f"{path}: cannot append a record (")
  assert path.read_bytes() == before


def _read_events(path) -> list[Event]:
  """TFRecord-framed events, as TensorBoard reads them (length, CRCs, payload)."""
  from tensorboardX.record_writer import masked_crc32c

  data, events, i = path.read_bytes(), [], 0
  while i < len(data):
    (n,) = struct.unpack("<Q", data[i : i + 8])
    assert struct.unpack("<I", data[i + 8 : i + 12])[0] == masked_crc32c(data[i : i + 8])
    payload = data[i + 12 : i + 12 + n]
    assert struct.unpack("<I", data[i + 12 + n : i + 16 + n])[0] == masked_crc32c(payload)
    events.append(Event.FromString(payload))
    i += 16 + n
  return events


def test_scalar_writer_records_and_full_disk(tmp_path, monkeypatch):
  w = scalars.ScalarWriter(tmp_path / "tb", purge_step=11)
  w.write(12, {"train_loss": 0.5, "val_mae": 2.25})
  size = w.path.stat().st_size
  real = os.write
  monkeypatch.setattr(os, "write", lambda fd, data: real(fd, data[:7]))  # disk full mid-record
  with pytest.raises(UserError, match=r"events\.out\.tfevents\..*: cannot write \(No space left on device\)"):
    w.write(13, {"train_loss": 0.25})
  monkeypatch.undo()
  w.close()
  assert w.path.stat().st_size == size  # no torn record
  events = _read_events(w.path)
  assert events[0].file_version == "brain.Event:2"
  assert events[1].step == 11 and events[1].session_log.status == events[1].session_log.START
  assert events[2].step == 12
  assert {v.tag: v.simple_value for v in events[2].summary.value} == {"train_loss": 0.5, "val_mae": 2.25}


_HOLD_LOCK = """
import sys, time
from stjax.train.workdir_lock import WorkdirLock
with WorkdirLock(sys.argv[1]):
  print("held", flush=True)
  time.sleep(120)
"""


def _holder(workdir):
  proc = subprocess.Popen(
    [sys.executable, "-c", _HOLD_LOCK, str(workdir)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
  )
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_workdir_lock_names_the_holder_and_ignores_dead_ones(tmp_path):
  workdir = tmp_path / "run"
  proc = _holder(workdir)
  try:
    with pytest.raises(UserError) as e:
      with workdir_lock.WorkdirLock(workdir):
        pass
    msg = str(e.value)
    assert "\n" not in msg and f"in use by another training run (pid {proc.pid} on host " in msg
  finally:
    proc.kill()  # SIGKILL: no cleanup, the lock file still names it
    proc.wait(timeout=30)
  assert json.loads((workdir / ".lock").read_text())["pid"] == proc.pid
  with workdir_lock.WorkdirLock(workdir) as lock:  # the kernel dropped the dead holder's flock
    assert not lock.created and json.loads((workdir / ".lock").read_text())["pid"] == os.getpid()
  assert (workdir / ".lock").read_text() == ""  # released


def test_workdir_lock_without_flock_uses_the_pid(tmp_path, monkeypatch):
  import fcntl

  def no_flock(fd, op):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

  monkeypatch.setattr(fcntl, "flock", no_flock)
  workdir = tmp_path / "run"
  workdir.mkdir()
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  host = __import__("socket").gethostname()
  (workdir / ".lock").write_text(json.dumps({"pid": dead.pid, "host": host, "started": time.time()}))
  with workdir_lock.WorkdirLock(workdir):  # stale: that process is gone
    assert json.loads((workdir / ".lock").read_text())["pid"] == os.getpid()
  alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    (workdir / ".lock").write_text(json.dumps({"pid": alive.pid, "host": host, "started": time.time()}))
    with pytest.raises(
      UserError, match=rf"pid {alive.pid} on host .*; if that run is gone, delete .*\.lock$"
    ):
      with workdir_lock.WorkdirLock(workdir):
        pass
  finally:
    alive.kill()
    alive.wait()


def test_workdir_lock_on_a_read_only_place_is_one_line(tmp_path, monkeypatch):
  real = os.open

  def read_only(path, flags, *args, **kwargs):
    if str(path).endswith(".lock"):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    return real(path, flags, *args, **kwargs)

  monkeypatch.setattr(os, "open", read_only)
  with pytest.raises(UserError, match=r"^--workdir .*: cannot write there \(Read-only file system\)$"):
    with workdir_lock.WorkdirLock(tmp_path / "new"):
      pass
  assert not (tmp_path / "new").exists()  # the folder it made is gone again


def test_graceful_stop_defers_signals_to_step_boundaries():
  with signals.GracefulStop() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signum == signal.SIGTERM  # recorded, nothing raised
  with signals.GracefulStop() as stop:
    with pytest.raises(KeyboardInterrupt):
      with stop.saving():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C: waits for the save to end
        finished = True
    assert finished and stop.signum == signal.SIGINT
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
  e = signals.TrainingStopped(signal.SIGTERM, 7, "/w/checkpoints/last/7")
  assert e.exit_code == 143 and str(e) == (
    "stopped by SIGTERM at step 7; saved /w/checkpoints/last/7; run the same command again to resume"
  )


def test_warmup_longer_than_the_run_is_clipped_with_a_note(capsys):
  cfg = ml_collections.ConfigDict(optim.default_optim_config())
  cfg.update(schedule="warmup_cosine", warmup_steps=50, learning_rate=2e-3)  # the quickstart's warmup
  lr = optim.make_schedule(cfg, steps_per_epoch=44, total_steps=20)  # --config.train.max_steps=20
  assert "warmup steps do not fit the run's 20 steps; warming up over 19" in capsys.readouterr().err
  got = np.array([float(lr(s)) for s in range(21)])
  want = np.concatenate([2e-3 * np.arange(20) / 19, [0.0]])  # linear warmup to the peak, then cosine end
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
  cfg.warmup_steps = -1
  with pytest.raises(UserError, match=r"config\.optim\.warmup_steps: must be >= 0"):
    optim.make_schedule(cfg, total_steps=20)
