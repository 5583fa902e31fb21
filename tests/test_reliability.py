"""A run survives crashes, full disks, divergence, signals and damaged checkpoints (issue 21).

Each test reproduces one defect on the tiny model of test_train.py (24 steps: 12 per epoch,
validation at 12 and 24, checkpoints at 5, 10, 12, 15, 20, 24, keep 3) and checks that a rerun of
the same call ends exactly like an uninterrupted run: same results, same metrics.jsonl.
"""

import errno
import gc
import json
import math
import os
import pathlib
import signal
import subprocess
import types

import jax
import numpy as np
import pytest
from test_train import Tiny, tiny_config, tiny_model  # noqa: F401 (tiny_model: autouse fixture)

from stjax import evaluate
from stjax.errors import UserError
from stjax.models import registry
from stjax.train import checkpoint, jsonl, loop, safe_write, scalars, signals
from stjax.train import step as step_lib


class Killed(BaseException):
  """What SIGKILL does to the loop: it stops wherever it is, nothing is cleaned up by the loop."""


@pytest.fixture
def patch():
  """A monkeypatch of the test's own: `patch.undo()` keeps the tiny model registered."""
  mp = pytest.MonkeyPatch()
  yield mp
  mp.undo()


def _cfg(**train):
  return tiny_config(**{"num_epochs": 2, "checkpoint_every_steps": 5, **train})


@pytest.fixture(scope="module", autouse=True)
def compile_cache():
  """This module's many runs of one tiny program compile once: the session's XLA cache
  (tests/conftest.py) also keeps programs that compile in under a second (a cached executable is
  the same program, so results stay bit-exact)."""
  old = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  yield
  jax.config.update("jax_persistent_cache_min_compile_time_secs", old)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, compile_cache) -> pathlib.Path:
  """An uninterrupted run of `_cfg()`."""
  workdir = tmp_path_factory.mktemp("reference")
  with pytest.MonkeyPatch.context() as mp:
    mp.setitem(registry._MODULES, "tiny", Tiny.__module__)
    mp.setitem(
      registry._BUILDERS,
      "tiny",
      lambda cfg, spec, kernels, pretrained: Tiny(cfg.hidden, spec.output_len, spec.out_channels),
    )
    loop.train_and_evaluate(_cfg(), str(workdir))
  return workdir


def _assert_same_run(got: pathlib.Path, want: pathlib.Path) -> None:
  """Same results and metrics.jsonl (but timing) as `want`, bit for bit."""
  a, b = (json.loads((d / "results.json").read_text()) for d in (want, got))
  assert (b["test"], b["val"], b["best_step"], b["steps"]) == (
    a["test"],
    a["val"],
    a["best_step"],
    a["steps"],
  )
  drop = lambda rs: [{k: v for k, v in r.items() if k not in loop.TIMING_KEYS} for r in rs]
  assert drop(jsonl.read(got / "metrics.jsonl")) == drop(jsonl.read(want / "metrics.jsonl"))


def _one_line(e) -> str:
  message = str(e.value) if hasattr(e, "value") else str(e)
  assert "\n" not in message
  return message


def _kill_at_step(patch, n: int, action=None):
  """The jitted train step, dying (Killed) before step `n` or running `action(state, measurements)`
  on step `n`'s outputs."""
  real = step_lib.jit_train_step

  def jit_train_step(*args, **kwargs):
    train_step, calls = real(*args, **kwargs), {"n": 0}

    def wrapped(state, batch):
      calls["n"] += 1
      if calls["n"] == n and action is None:
        raise Killed
      out = train_step(state, batch)
      return action(*out) if calls["n"] == n else out

    return wrapped

  patch.setattr(step_lib, "jit_train_step", jit_train_step)


# --- 1. a crash between the two saves of one step -------------------------------------------


def test_crash_between_last_and_best_resumes(tmp_path, patch, reference):
  real = checkpoint.Checkpoints.save_best

  def save_best(self, step, state, meta):
    if step == 12:
      raise Killed  # last/12 is complete, best/12 never started
    return real(self, step, state, meta)

  patch.setattr(checkpoint.Checkpoints, "save_best", save_best)
  with pytest.raises(Killed):
    loop.train_and_evaluate(_cfg(), str(tmp_path))
  ck = checkpoint.Checkpoints(tmp_path)
  assert ck.all_steps() == [5, 10, 12] and ck.best_steps() == []
  patch.undo()
  loop.train_and_evaluate(_cfg(), str(tmp_path))  # best/12 is saved again from last/12
  _assert_same_run(tmp_path, reference)
  assert checkpoint.Checkpoints(tmp_path).best_steps() == [12, 24]


def test_best_step_left_without_its_last_step_resumes(tmp_path, patch, reference):
  """The state older versions left behind (best saved first, then killed): best/12 exists but the
  run resumes from last/10; the rerun of step 12 replaces best/12 instead of StepAlreadyExistsError."""
  real_save, real_best = checkpoint.Checkpoints.save, checkpoint.Checkpoints.save_best

  def save(self, step, state, data_state, meta):
    if step == 12:
      real_best(self, 12, state, {"step": 12, "val": {"mae": 1.0}})
      raise Killed
    return real_save(self, step, state, data_state, meta)

  patch.setattr(checkpoint.Checkpoints, "save", save)
  with pytest.raises(Killed):
    loop.train_and_evaluate(_cfg(), str(tmp_path))
  ck = checkpoint.Checkpoints(tmp_path)
  assert ck.all_steps() == [5, 10] and ck.best_steps() == [12]
  patch.undo()
  loop.train_and_evaluate(_cfg(), str(tmp_path))
  _assert_same_run(tmp_path, reference)


# --- 2. every write fails once (full disk, read-only), then the rerun finishes ------------------


def _os_with(**overrides):
  """The `os` module with some functions replaced, for one module's view of it."""
  return types.SimpleNamespace(
    **{**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")}, **overrides}
  )


def _enospc(*_):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_each_write_failing_is_one_line_and_the_rerun_finishes(tmp_path, patch, reference, capfd):
  """metrics.jsonl, TensorBoard, checkpoints/last (tensorstore's ValueError), checkpoints/best,
  results.json, the plots and config.json fail in turn; each time one line, nothing torn, and the
  same command finishes the run exactly as if nothing had happened."""
  workdir = tmp_path / "run"

  def fails(inject, expect: str):
    with patch.context() as mp:
      inject(mp)
      with pytest.raises(UserError) as e:
        loop.train_and_evaluate(_cfg(), str(workdir))
    message = _one_line(e)
    assert expect in message, message
    assert "Traceback" not in capfd.readouterr().err
    records = jsonl.read(workdir / "metrics.jsonl")  # never a torn line
    assert (workdir / "metrics.jsonl").read_bytes().endswith(b"\n") and records
    assert not list(workdir.glob("checkpoints/*/*.orbax-checkpoint-tmp*"))
    return message

  # config.json of a new run: nothing is left behind.
  real_replace = os.replace
  config_fails = lambda mp: mp.setattr(
    safe_write,
    "os",
    _os_with(replace=lambda a, b: _enospc() if str(b).endswith("config.json") else real_replace(a, b)),
  )
  with patch.context() as mp:
    config_fails(mp)
    with pytest.raises(UserError, match=r"config\.json: cannot write \(No space left on device\)$"):
      loop.train_and_evaluate(_cfg(), str(workdir))
  assert not workdir.exists()

  # metrics.jsonl at step 8: half the line reaches the disk, then it is full.
  real_pwrite = os.pwrite
  half = lambda fd, data, off: (
    real_pwrite(fd, data[: len(data) // 2], off) if b'"step": 8,' in data else real_pwrite(fd, data, off)
  )
  fails(
    lambda mp: mp.setattr(jsonl, "os", _os_with(pwrite=half)),
    "metrics.jsonl: cannot append a record (No space",
  )
  assert jsonl.read(workdir / "metrics.jsonl")[-1]["step"] == 5

  # TensorBoard at step 10 (a read-only remount).
  real_write = os.write

  def erofs_at_10(fd, data):
    if b"train_loss" in data and scalars.Event.FromString(data[12:-4]).step == 10:
      raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    return real_write(fd, data)

  fails(
    lambda mp: mp.setattr(scalars, "os", _os_with(write=erofs_at_10)), "cannot write (Read-only file system)"
  )

  # checkpoints/last at step 12: tensorstore's ValueError, a half-written temporary folder.
  import orbax.checkpoint as ocp

  real_save = ocp.CheckpointManager.save

  def tensorstore_full(self, step, *args, **kwargs):
    if self.directory.name == "last" and step == 12:
      (self.directory / "12.orbax-checkpoint-tmp").mkdir()
      (self.directory / "12.orbax-checkpoint-tmp" / "partial").write_bytes(b"\0" * 100)
      raise ValueError(
        'RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database: Failed to write 4096 bytes to file 7: '
        "No space left on device [os_error_code='28']"
      )
    return real_save(self, step, *args, **kwargs)

  message = fails(lambda mp: mp.setattr(ocp.CheckpointManager, "save", tensorstore_full), "saving step 12")
  assert "(No space left on device); the run can resume from " in message and message.endswith("last/10")

  # checkpoints/best at step 24 (after last/24 is complete).
  def best_full(self, step, *args, **kwargs):
    if self.directory.name == "best" and step == 24:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_save(self, step, *args, **kwargs)

  message = fails(lambda mp: mp.setattr(ocp.CheckpointManager, "save", best_full), "saving step 24 under")
  assert message.endswith("the run can resume from " + str(workdir.resolve() / "checkpoints" / "last" / "24"))

  # results.json, then predictions.png: the run is trained; only the report is redone.
  for name in ("results.json", "predictions.png"):
    fail = lambda a, b, name=name: _enospc() if str(b).endswith(name) else real_replace(a, b)
    fails(lambda mp: mp.setattr(safe_write, "os", _os_with(replace=fail)), f"{name}: cannot write (No space")
    assert not (workdir / name).exists()

  loop.train_and_evaluate(_cfg(), str(workdir))
  _assert_same_run(workdir, reference)
  for name in ("config.json", "results.json", "results.md", "metrics.jsonl", "predictions.png"):
    assert (workdir / name).stat().st_mode & 0o777 == 0o666 & ~_umask(), name


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


# --- 3. a torn metrics.jsonl line after a crash ------------------------------------------------


def test_torn_metrics_line_after_a_crash_resumes(tmp_path, patch, reference):
  _kill_at_step(patch, 18)
  with pytest.raises(Killed):
    loop.train_and_evaluate(_cfg(), str(tmp_path))
  with open(tmp_path / "metrics.jsonl", "ab") as f:
    f.write(b'{"step": 18, "train_loss": 0.4')  # the line a SIGKILL (or full disk) cut short
  patch.undo()
  loop.train_and_evaluate(_cfg(), str(tmp_path))  # was: JSONDecodeError on every restart
  _assert_same_run(tmp_path, reference)


# --- 4. divergence ---------------------------------------------------------------------------


def _finite_checkpoints(workdir) -> None:
  """Every checkpoint left under last/ and best/ holds finite numbers only."""
  for kind in ("last", "best"):
    for step_dir in (workdir / "checkpoints" / kind).glob("[0-9]*"):
      manager = checkpoint.ocp.CheckpointManager(step_dir.parent, item_names=("state",))
      args = checkpoint.ocp.args.Composite(state=checkpoint.ocp.args.StandardRestore())
      state = manager.restore(int(step_dir.name), args=args)["state"]
      for leaf in jax.tree.leaves(state):
        assert np.all(np.isfinite(np.asarray(leaf, np.float64))), step_dir


def test_learning_rate_1e30_twice_then_a_lower_one(tmp_path, capsys):
  """The issue's repro: eval and checkpoint every step at lr 1e30. No non-finite state is saved,
  `best` never holds a NaN MAE, rerunning repeats the same one line, and a lower learning rate
  is accepted on the same workdir."""
  messages = []
  for _ in range(2):
    cfg = _cfg(eval_every_steps=1, checkpoint_every_steps=1)
    cfg.optim.learning_rate = 1e30
    with pytest.raises(UserError, match=r"^training diverged: ") as e:
      loop.train_and_evaluate(cfg, str(tmp_path))
    messages.append(_one_line(e))
    _finite_checkpoints(tmp_path)
    assert checkpoint.Checkpoints(tmp_path).latest_step() is None
  assert messages[0] == messages[1] and "no intact checkpoint exists: rerun with a lower" in messages[0]
  cfg = _cfg()
  cfg.optim.learning_rate = 1e-3
  res = loop.train_and_evaluate(cfg, str(tmp_path))
  assert res["steps"] == 24 and math.isfinite(res["test"]["mae"])


def test_nonfinite_loss_right_after_a_checkpoint_quarantines_it(tmp_path, patch, reference, capsys):
  """Update 10 sends the parameters to 1e30 (finite: the save at 10 passes), the loss of step 11
  is inf: checkpoint 10 is moved away, the error names step 5, and a lower learning rate resumes
  from step 5."""

  def poison(state, measurements):
    with jax.transfer_guard("allow"):  # the loop runs steps under "disallow"
      return state.replace(params=jax.tree.map(lambda p: p * 1e30, state.params)), measurements

  _kill_at_step(patch, 10, action=poison)
  with pytest.raises(UserError) as e:
    loop.train_and_evaluate(_cfg(), str(tmp_path))
  message = _one_line(e)
  assert (
    message.startswith("training diverged: loss is ")
    and " at step 11 (the parameters saved at step 10" in message
  )
  assert str(tmp_path.resolve() / "checkpoints" / "quarantine" / "last-10") in message
  assert (
    f"the newest intact checkpoint is step 5 ({tmp_path.resolve() / 'checkpoints' / 'last' / '5'})" in message
  )
  assert checkpoint.Checkpoints(tmp_path).all_steps() == [5]
  _finite_checkpoints(tmp_path)
  patch.undo()
  capsys.readouterr()
  cfg = _cfg()
  cfg.optim.learning_rate = 1e-3  # was refused as a change of config
  res = loop.train_and_evaluate(cfg, str(tmp_path))
  out = capsys.readouterr().out
  assert "Resuming with changed config.optim.learning_rate (0.003 -> 0.001)" in out and "at step 5" in out
  assert res["steps"] == 24 and math.isfinite(res["test"]["mae"])
  assert json.loads((tmp_path / "config.json").read_text())["optim"]["learning_rate"] == 1e-3


def test_nan_validation_never_becomes_best(tmp_path, patch):
  real = loop.evaluate_split

  def evaluate_split(exp, state, split, *args, **kwargs):
    metrics, trace = real(exp, state, split, *args, **kwargs)
    return {**metrics, "mae": float("nan")}, trace

  patch.setattr(loop, "evaluate_split", evaluate_split)
  with pytest.raises(UserError) as e:
    loop.train_and_evaluate(_cfg(), str(tmp_path))
  assert _one_line(e).startswith(
    "training diverged: validation MAE is nan at step 12; the newest intact checkpoint is step 10"
  )
  ck = checkpoint.Checkpoints(tmp_path)
  assert ck.best_steps() == [] and ck.all_steps() == [5, 10]


# --- 5. signals ------------------------------------------------------------------------------


def test_sigterm_mid_run_saves_and_resumes_bit_identical(tmp_path, patch, reference, capsys):
  """SIGTERM during step 7 (no checkpoint step, in the middle of a logging window): checkpoint 7
  is saved at the step boundary, then the rerun ends exactly like the uninterrupted run."""
  _kill_at_step(patch, 7, action=lambda *out: (os.kill(os.getpid(), signal.SIGTERM), out)[1])
  with pytest.raises(signals.TrainingStopped) as e:
    loop.train_and_evaluate(_cfg(), str(tmp_path))
  assert e.value.exit_code == 143 and e.value.step == 7
  assert str(e.value) == (
    f"stopped by SIGTERM at step 7; saved {tmp_path.resolve() / 'checkpoints' / 'last' / '7'}; "
    "run the same command again to resume"
  )
  assert checkpoint.Checkpoints(tmp_path).all_steps() == [5, 7]
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
  patch.undo()
  loop.train_and_evaluate(_cfg(), str(tmp_path))
  assert "at step 7" in capsys.readouterr().out
  _assert_same_run(tmp_path, reference)


def test_ctrl_c_twice_during_a_save_lets_the_save_finish(tmp_path, patch, reference, capfd):
  real = checkpoint.Checkpoints.save

  def save(self, step, *args):
    if step == 10:
      os.kill(os.getpid(), signal.SIGINT)
      os.kill(os.getpid(), signal.SIGINT)  # impatient: the second Ctrl-C lands inside the save
    return real(self, step, *args)

  patch.setattr(checkpoint.Checkpoints, "save", save)
  with pytest.raises(KeyboardInterrupt):
    loop.train_and_evaluate(_cfg(), str(tmp_path))
  assert "Traceback" not in capfd.readouterr().err
  assert checkpoint.Checkpoints(tmp_path).all_steps() == [5, 10]  # 10 complete, nothing torn
  assert not list(tmp_path.glob("checkpoints/last/*tmp*"))
  patch.undo()
  loop.train_and_evaluate(_cfg(), str(tmp_path))
  _assert_same_run(tmp_path, reference)


# --- 6. damaged checkpoints ------------------------------------------------------------------


def _truncate_largest_file(state: pathlib.Path) -> None:
  """Cuts the array data file of a checkpoint's `state` folder in half (OCDBT keeps it in d/)."""
  biggest = max(state.glob("d/*"), key=lambda p: p.stat().st_size)
  biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])


def test_truncated_checkpoint_falls_back_to_an_older_step(tmp_path, patch, reference, capfd):
  _kill_at_step(patch, 18)
  with pytest.raises(Killed):
    loop.train_and_evaluate(_cfg(), str(tmp_path))
  assert checkpoint.Checkpoints(tmp_path).all_steps() == [10, 12, 15]
  _truncate_largest_file(tmp_path / "checkpoints" / "last" / "15" / "state")
  patch.undo()
  capfd.readouterr()
  loop.train_and_evaluate(_cfg(), str(tmp_path))
  out, err = capfd.readouterr()
  skipped = [ln for ln in err.splitlines() if "skipped step 15" in ln]
  assert len(skipped) == 1 and "Traceback" not in err and "Resumed from" in out and "at step 12" in out
  assert skipped[0].startswith("stjax: warning: checkpoint: skipped step 15, ") and skipped[0].endswith(
    f"moved it to {tmp_path.resolve() / 'checkpoints' / 'quarantine' / 'last-15'}"
  )
  _assert_same_run(tmp_path, reference)

  # A damaged best checkpoint: stjax.evaluate uses the older kept one, saying so in one line.
  _truncate_largest_file(tmp_path / "checkpoints" / "best" / "24" / "state")
  metrics = evaluate.evaluate_workdir(tmp_path, "val")
  err = capfd.readouterr().err
  lines = [ln for ln in err.splitlines() if "best" in ln]
  assert "Traceback" not in err and len(lines) == 1
  assert lines[0].startswith(
    f"stjax: warning: checkpoint: {tmp_path.resolve() / 'checkpoints' / 'best' / '24'} cannot be read ("
  ) and lines[0].endswith("); using best step 12 instead")
  val_12 = [r for r in jsonl.read(tmp_path / "metrics.jsonl") if r["step"] == 12][0]["val_mae"]
  assert metrics["mae"] == pytest.approx(val_12, rel=1e-6)
  _truncate_largest_file(tmp_path / "checkpoints" / "best" / "12" / "state")
  with pytest.raises(
    UserError, match=r"best/24 cannot be read .*; checkpoint: .*best/12 cannot be read"
  ) as e:
    evaluate.evaluate_workdir(tmp_path, "test")
  _one_line(e)


def test_no_readable_checkpoint_is_one_line_and_moves_nothing(tmp_path, patch):
  _kill_at_step(patch, 7)
  with pytest.raises(Killed):
    loop.train_and_evaluate(_cfg(), str(tmp_path))
  _truncate_largest_file(tmp_path / "checkpoints" / "last" / "5" / "state")
  patch.undo()
  with pytest.raises(
    UserError, match=r"no readable checkpoint under .*last \(step 5: .*\); if they are damaged"
  ) as e:
    loop.train_and_evaluate(_cfg(), str(tmp_path))
  _one_line(e)
  assert checkpoint.Checkpoints(tmp_path).all_steps() == [5]


# --- 7. a failed start, read-only and full disks for real (tmpfs) ------------------------------


def test_a_failed_start_leaves_no_run_folder(tmp_path, patch):
  def compile_fails(exp):
    raise UserError("compile: boom")

  patch.setattr(loop, "compile_train_step", compile_fails)
  with pytest.raises(UserError, match="boom"):
    loop.train_and_evaluate(_cfg(), str(tmp_path / "new"))
  assert not (tmp_path / "new").exists()
  # An existing folder whose run failed before its first checkpoint claims nothing.
  (tmp_path / "old").mkdir()
  cfg = _cfg()
  cfg.seed = 1
  (tmp_path / "old" / "config.json").write_text(json.dumps(checkpoint.config_to_dict(cfg)))
  with pytest.raises(UserError, match="boom"):
    loop.train_and_evaluate(_cfg(), str(tmp_path / "old"))  # not "holds a run of a different config"
  assert json.loads((tmp_path / "old" / "config.json").read_text())["seed"] == 0


@pytest.fixture
def tmpfs(tmp_path):
  """A 2 MB tmpfs at tmp_path/fs (remount with `_remount(path, options)`); skipped where mounting
  is not allowed."""
  mount = tmp_path / "fs"
  mount.mkdir()
  r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
  if r.returncode:
    pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], check=True)


def _remount(mount, options: str) -> None:
  subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


def test_real_full_disk_and_read_only_workdir(tmpfs, patch, reference, capfd):
  workdir = tmpfs / "run"
  _remount(tmpfs, "size=300k")  # full before the run ends
  with pytest.raises(UserError) as e:
    loop.train_and_evaluate(_cfg(), str(workdir))
  assert "(No space left on device)" in _one_line(e)
  gc.collect()  # orbax's failed write tasks report when collected
  assert "Traceback" not in capfd.readouterr().err
  jsonl.read(workdir / "metrics.jsonl")
  assert not list(workdir.glob("checkpoints/*/*tmp*"))
  _remount(tmpfs, "ro")
  with pytest.raises(UserError, match=r"^--workdir .*: cannot write there \(Read-only file system\)$"):
    loop.train_and_evaluate(_cfg(), str(workdir))
  with pytest.raises(UserError, match=r"^--workdir .*: cannot write there \(Read-only file system\)$"):
    loop.train_and_evaluate(_cfg(), str(tmpfs / "new"))
  _remount(tmpfs, "rw,size=4m")
  loop.train_and_evaluate(_cfg(), str(workdir))
  assert "Traceback" not in capfd.readouterr().err
  _assert_same_run(workdir, reference)
