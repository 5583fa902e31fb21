"""Checkpoints: exact sharded round trip, keep-last-K and best, failed saves, workdir guard."""

import errno
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from stjax import sharding
from stjax.errors import UserError
from stjax.train import checkpoint
from stjax.train.state import TrainState


def _state(rng, mesh, step=0):
  params = {"w": rng.normal(size=(8, 4)).astype(np.float32), "b": rng.normal(size=(4,)).astype(np.float32)}
  shard = {"w": NamedSharding(mesh, P("data", None)), "b": NamedSharding(mesh, P())}
  params = jax.device_put(params, shard)
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)
  params = jax.tree.map(lambda p: p + 1.0, params)  # make moments/params distinct from init
  return TrainState(
    step=jnp.int32(step),
    params=params,
    opt_state=opt_state,
    model_state={"memory": {"keys": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}},
    rng=jax.random.PRNGKey(int(rng.integers(1 << 30))),
  )


def _mesh():
  cfg = sharding.default_mesh_config()
  return sharding.make_mesh(cfg)


def _equal(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_round_trip_keep_last_and_best(tmp_path, rng):
  mesh = _mesh()
  ck = checkpoint.Checkpoints(tmp_path, keep=2)
  states = {s: _state(rng, mesh, s) for s in (10, 20, 30)}
  for s, st in states.items():
    ck.save(s, st, {"next_index": s * 7}, {"best_val_mae": 1.0 / s})
  ck.save_best(20, states[20], {"step": 20})
  assert ck.all_steps() == [20, 30] and ck.latest_step() == 30 and ck.best_step() == 20
  target = checkpoint.abstract_like(states[30])
  restored, data_state, meta = ck.restore(target)
  _equal(restored, states[30])
  assert restored.params["w"].sharding == states[30].params["w"].sharding
  assert data_state == {"next_index": 210} and meta == {"best_val_mae": 1.0 / 30}
  best, best_meta = ck.restore_best(target)
  _equal(best, states[20])
  assert best_meta == {"step": 20}
  # A new manager (a restarted process) sees the same steps.
  ck.close()
  again = checkpoint.Checkpoints(tmp_path, keep=2)
  assert again.latest_step() == 30 and again.best_step() == 20


def test_failed_save_keeps_last_good_checkpoint(tmp_path, rng, monkeypatch):
  mesh = _mesh()
  ck = checkpoint.Checkpoints(tmp_path, keep=1)
  good = _state(rng, mesh, 5)
  ck.save(5, good, {"i": 5}, {"m": 5})
  import orbax.checkpoint as ocp

  calls = {"n": 0}

  def full_disk(self, directory, *args, **kwargs):
    calls["n"] += 1
    (directory / "partial").write_bytes(b"\0" * 100)  # half-written bytes, then the disk is full
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(ocp.handlers.JsonCheckpointHandler, "save", full_disk)
  monkeypatch.setattr(
    ocp.handlers.JsonCheckpointHandler,
    "async_save",
    lambda self, directory, *a, **k: full_disk(self, directory),
  )
  with pytest.raises(UserError) as e:
    ck.save(6, _state(rng, mesh, 6), {"i": 6}, {"m": 6})
  msg = str(e.value)
  assert (
    "\n" not in msg
    and "No space left on device" in msg
    and msg.endswith("can resume from " + str(ck.root / "last" / "5"))
  )
  assert calls["n"] >= 1
  monkeypatch.undo()
  # keep=1, yet the failed save deleted nothing: step 5 restores bit-exact, also after a restart.
  restarted = checkpoint.Checkpoints(tmp_path, keep=1)
  assert restarted.all_steps() == [5]
  restored, data_state, meta = restarted.restore(checkpoint.abstract_like(good))
  _equal(restored, good)
  assert data_state == {"i": 5} and meta == {"m": 5}


def test_saving_an_existing_step_replaces_it(tmp_path, rng):
  """A step on disk from an interrupted run (e.g. best/S saved, then killed before last/S) is
  replaced when the run redoes that step (was: StepAlreadyExistsError on every restart)."""
  mesh = _mesh()
  ck = checkpoint.Checkpoints(tmp_path)
  old, new = _state(rng, mesh, 12), _state(rng, mesh, 12)
  ck.save_best(12, old, {"step": 12, "run": "interrupted"})
  ck.close()
  again = checkpoint.Checkpoints(tmp_path)
  again.save_best(12, new, {"step": 12, "run": "redone"})
  state, meta = again.restore_best(checkpoint.abstract_like(new))
  _equal(state, new)
  assert meta["run"] == "redone" and again.best_steps() == [12]


def _cfg(lr=0.1):
  c = ml_collections.ConfigDict({"seed": 0, "overwrite": False, "train": {"lr": lr, "hw": (1, 2)}})
  return c


def test_prepare_workdir_refuses_a_different_config(tmp_path):
  wd = tmp_path / "run"
  checkpoint.prepare_workdir(wd, _cfg())
  assert json.loads((wd / "config.json").read_text())["train"] == {"lr": 0.1, "hw": [1, 2]}
  checkpoint.prepare_workdir(wd, _cfg())  # same config: resume is allowed
  (wd / "checkpoints" / "last" / "10").mkdir(parents=True)  # a run with a checkpoint claims the workdir
  (wd / "metrics.jsonl").write_text("{}\n")
  (wd / "predictions.png").write_bytes(b"old plot")
  with pytest.raises(UserError, match=r"config\.train\.lr differ.*--config.overwrite=True") as e:
    checkpoint.prepare_workdir(wd, _cfg(lr=0.2))
  assert "\n" not in str(e.value)
  assert (wd / "checkpoints").exists() and json.loads((wd / "config.json").read_text())["train"]["lr"] == 0.1
  over = _cfg(lr=0.2)
  over.overwrite = True
  checkpoint.prepare_workdir(wd, over)
  assert not (wd / "checkpoints").exists() and not (wd / "metrics.jsonl").exists()
  assert not (wd / "predictions.png").exists()  # no stale plot of the replaced run
  assert json.loads((wd / "config.json").read_text())["train"]["lr"] == 0.2


def test_atomic_write_never_leaves_half_a_file(tmp_path, monkeypatch):
  path = tmp_path / "results.json"
  checkpoint.atomic_write_text(path, "old\n")

  def boom(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "fsync", boom)
  with pytest.raises(UserError, match=r"results\.json: cannot write \(No space left on device\)$"):
    checkpoint.atomic_write_text(path, "new" * 1000)
  assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
  monkeypatch.undo()
  old_umask = os.umask(0o027)
  try:  # the usual permissions (0666 minus the umask), not mkstemp's 0600
    checkpoint.atomic_write_text(path, "new\n")
    assert path.stat().st_mode & 0o777 == 0o640 and path.read_text() == "new\n"
  finally:
    os.umask(old_umask)


def test_reconcile_best_with_the_step_resumed_from(tmp_path, rng):
  """checkpoints/best made to agree with the bookkeeping of the step a run resumes from."""
  from stjax.train import resume

  mesh = _mesh()
  said = []
  ck = checkpoint.Checkpoints(tmp_path)
  states = {s: _state(rng, mesh, s) for s in (10, 15, 20)}
  ck.save_best(10, states[10], {"step": 10, "val": {"mae": 3.0}})
  ck.save_best(20, states[20], {"step": 20, "val": {"mae": 2.0}})
  # Resumed at 15 (e.g. last/20 was unreadable): best/20 belongs to steps that will be redone.
  assert resume.reconcile_best(ck, 15, states[15], 10, 3.0, said.append) == (10, 3.0)
  assert ck.best_steps() == [10] and said == [
    "checkpoint: removed best step 20, made after step 15 which the run resumes from"
  ]
  # Killed between last/15 and best/15: best/15 is saved again from the restored state.
  assert resume.reconcile_best(ck, 15, states[15], 15, 2.5, said.append) == (15, 2.5)
  assert ck.best_steps() == [10, 15]
  _equal(ck.restore_best(checkpoint.abstract_like(states[15]))[0], states[15])
  # The named best is gone and older than the resume step: the newest kept one, with its own MAE.
  ck.delete_best(15)
  assert resume.reconcile_best(ck, 15, states[15], 12, 2.7, said.append) == (10, 3.0)
  assert said[-1] == "checkpoint: best step 12 is gone; continuing from best step 10"
