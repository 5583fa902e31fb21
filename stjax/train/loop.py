"""The training loop: `train_and_evaluate(config, workdir)`.

Phases, in order (each marked below): setup, data, model init, sharding, restore, loop, eval,
final. The jitted step maps a `TrainState` to a new one and returns measurements; everything that
changes lives in that state, so checkpoints resume exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import shutil
import sys
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from stjax import distributed, sharding
from stjax.data import windows
from stjax.data.pipeline import train_batches
from stjax.data.windows import TRAIN_KEYS
from stjax.train import checkpoint as ckpt_lib
from stjax.train import jsonl, optim, resume, run_folder, scalars, signals, workdir_lock
from stjax.train.divergence import DivergenceGuard
from stjax.train.evaluation import compile_eval_step, evaluate_split
from stjax.train.experiment import build_experiment, schedule_of
from stjax.train.report import finalize
from stjax.train.step import compile_train_step

TIMING_KEYS = ("steps_per_s", "wall_s")  # metrics.jsonl fields that differ between equal runs


@dataclasses.dataclass
class LoopState:
  """The loop's own bookkeeping, saved as checkpoint `meta` so restarts continue it exactly."""

  best_val_mae: float | None = None
  best_step: int | None = None
  evals_since_best: int = 0
  wall_time_s: float = 0.0
  stopped_early: bool = False
  log_window: list = dataclasses.field(default_factory=list)  # measurements not yet in metrics.jsonl

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def _warn(message: str) -> None:
  print(f"stjax: warning: {message}", file=sys.stderr, flush=True)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns results.json data.

  Holds the workdir's lock for the whole run; SIGTERM/SIGINT stop it at a step boundary after a
  checkpoint (`signals.TrainingStopped`); every write failure is a one-line UserError.
  """
  # --- setup: data, model (nothing is written before the config is checked) ---
  exp = build_experiment(config)
  main = distributed.is_main_process()
  with workdir_lock.WorkdirLock(workdir) if main else contextlib.nullcontext() as lock:
    return _train(exp, pathlib.Path(workdir), main, created=lock is not None and lock.created)


def _train(exp, workdir: pathlib.Path, main: bool, created: bool) -> dict:
  config, bundle, t = exp.config, exp.bundle, exp.config.train  # kernel choices resolved
  say = _warn if main else (lambda message: None)
  try:
    if main:
      ckpt_lib.prepare_workdir(workdir, config)
      run_folder.save_run_data(workdir, exp)  # run.json, scaler.npz, graph.npz: for evaluate/predict
    if jax.process_count() > 1:  # the others open checkpoints only once host 0 has set the workdir up
      multihost_utils.sync_global_devices("stjax.train.loop: workdir ready")
    steps_per_epoch, total_steps, eval_every = schedule_of(config, len(bundle.splits["train"]))
    ckpt_every = t.checkpoint_every_steps or eval_every
    train_step = compile_train_step(exp)
    eval_step = compile_eval_step(exp)
    checkpoints = ckpt_lib.Checkpoints(workdir, keep=t.keep_checkpoints)
    iterator = train_batches(
      bundle.splits["train"], t.batch_size, seed=config.seed, num_epochs=-(-total_steps // steps_per_epoch)
    )
    # --- restore: the newest readable checkpoint, with a best checkpoint that agrees ---
    loop = LoopState()
    restored = resume.restore_newest_intact(checkpoints, exp.abstract_state, say)
    if restored is not None:
      state, data_state, meta = restored
      iterator.set_state(data_state)
      loop = LoopState(**meta)
      loop.best_step, loop.best_val_mae = resume.reconcile_best(
        checkpoints, int(jax.device_get(state.step)), state, loop.best_step, loop.best_val_mae, say
      )
      if main:
        print(f"Resumed from {checkpoints.root / 'last'} at step {int(state.step)}", flush=True)
    else:
      state = exp.init_state()
  except BaseException:
    if created:  # a failed start leaves no half-made run folder
      shutil.rmtree(workdir, ignore_errors=True)
    raise
  first_step = int(jax.device_get(state.step))
  guard = DivergenceGuard(checkpoints, resumed_step=first_step if restored is not None else None)
  metrics_path = workdir / "metrics.jsonl"
  writer = None
  if main:
    jsonl.truncate_after(metrics_path, first_step)
    writer = scalars.ScalarWriter(workdir / "tensorboard", purge_step=first_step + 1)
    n_total, n_train = optim.count_params(state.params, exp.trainable)
    print(f"Data: {_describe(bundle)}", flush=True)
    print(
      f"Model {config.model.name}: {n_total:,} params, {n_train:,} trainable; mesh "
      f"{dict(exp.mesh.shape)}; {total_steps} steps ({steps_per_epoch}/epoch)",
      flush=True,
    )

  # --- loop ---
  start_time, pending, window = time.time(), None, loop.log_window
  step = first_step
  rate_from = (step, start_time)  # steps_per_s counts from the previous record
  last_saved = first_step if first_step else None
  bar = _progress(total_steps, first_step, main and t.progress_bar)

  def flush(pending_item):
    """Host side of a finished step: NaN check, then into the running mean of the next record."""
    s, m = pending_item
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    guard.check_loss(s, m["loss"])
    window.append(m)

  def save(step: int, validated: bool, best_meta: dict | None = None) -> None:
    """Checkpoint `step` (last, then best if `best_meta`): a crash between the two leaves a last
    checkpoint whose bookkeeping names a best that the restart saves again from it."""
    nonlocal start_time, last_saved
    guard.check_state(step, state)
    loop.wall_time_s += time.time() - start_time
    start_time = time.time()
    with stop.saving():
      checkpoints.save(step, state, iterator.get_state(), loop.to_json())
      if best_meta is not None:
        checkpoints.save_best(step, state, best_meta)
    guard.saved(step, validated)
    last_saved = step

  try:
    with signals.GracefulStop() as stop:
      while step < total_steps and not loop.stopped_early:
        if _stop_agreed(stop, step, t.log_every_steps):
          if pending is not None:
            flush(pending)
            pending = None
          if step and last_saved != step:
            save(step, validated=False)
          saved = str(checkpoints.root / "last" / str(step)) if step else None
          raise signals.TrainingStopped(stop.signum, step, saved)
        host_batch = next(iterator)
        batch = sharding.put_batch({k: host_batch[k] for k in TRAIN_KEYS}, exp.batch_shardings)
        with exp.context(), jax.transfer_guard("disallow"):
          state, measurements = train_step(state, batch)
        step += 1
        if pending is not None:
          flush(pending)
        pending = (step, measurements)
        bar.update(1)
        do_eval = step % eval_every == 0 or step == total_steps
        do_save = do_eval or step % ckpt_every == 0
        if not (do_eval or do_save or step % t.log_every_steps == 0):
          continue
        flush(pending)
        pending = None
        record = {"step": step, "train_loss": float(np.mean([m["loss"] for m in window]))}
        record.update({k: float(np.mean([m[k] for m in window])) for k in window[-1] if k != "loss"})
        window.clear()
        now = time.time()
        record["steps_per_s"] = (step - rate_from[0]) / max(now - rate_from[1], 1e-9)
        bar.set_postfix(loss=f"{record['train_loss']:.4f}")
        best_meta = None
        if do_eval:
          val, _ = evaluate_split(exp, state, "val", eval_step)
          guard.check_validation(step, val)
          record.update({f"val_{k}": v for k, v in val.items() if isinstance(v, (int, float))})
          if loop.best_val_mae is None or val["mae"] < loop.best_val_mae:
            loop.best_val_mae, loop.best_step, loop.evals_since_best = float(val["mae"]), step, 0
            best_meta = {"step": step, "val": val}
          else:
            loop.evals_since_best += 1
            if t.patience and loop.evals_since_best >= t.patience:
              loop.stopped_early = True
              bar.write(
                f"Early stop at step {step}: no better val MAE for {t.patience} validations "
                f"(best {loop.best_val_mae:.4f} at step {loop.best_step})"
              )
        record["wall_s"] = loop.wall_time_s + time.time() - start_time  # training time, resumes included
        if main:
          jsonl.append(metrics_path, record)
          writer.write(step, {k: v for k, v in record.items() if k != "step"})
        if do_save:
          save(step, validated=do_eval, best_meta=best_meta)
        rate_from = (step, time.time())
      if pending is not None:
        flush(pending)
  finally:
    bar.close()
    if writer is not None:
      writer.close()
  if last_saved != step:  # Unreachable with the save rule above; guards against edits to it.
    raise AssertionError(f"loop ended at step {step} without a checkpoint (last {last_saved})")
  loop.wall_time_s += time.time() - start_time

  # --- final: the test set, once, with the best checkpoint ---
  return finalize(exp, checkpoints, workdir, steps=step, wall_time_s=loop.wall_time_s)


def _stop_agreed(stop: signals.GracefulStop, step: int, every: int) -> bool:
  """Whether to stop before the next step: at once on one process; on several, every `every`
  steps, when any process got a signal (all must save the same step)."""
  if jax.process_count() == 1:
    return stop.signum is not None
  if step % every:
    return False
  signums = multihost_utils.process_allgather(np.int32(stop.signum or 0))
  if signums.max() and stop.signum is None:
    stop.signum = int(signums.max())
  return bool(signums.max())


def _progress(total: int, initial: int, enabled: bool):
  return tqdm(
    total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, smoothing=0.1
  )


def _describe(bundle) -> str:
  return windows.describe(bundle)
