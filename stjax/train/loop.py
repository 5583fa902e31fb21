"""The training loop: `train_and_evaluate(config, workdir)`.

Phases, in order (each marked below): setup, data, model init, sharding, restore, loop, eval,
final. The jitted step maps a `TrainState` to a new one and returns measurements; everything that
changes lives in that state, so checkpoints resume exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from tensorboardX import SummaryWriter
from tqdm.auto import tqdm

from stjax import distributed, sharding
from stjax.data import windows
from stjax.data.pipeline import train_batches
from stjax.data.windows import TRAIN_KEYS
from stjax.errors import UserError
from stjax.train import checkpoint as ckpt_lib
from stjax.train import optim, run_folder
from stjax.train.evaluation import compile_eval_step, evaluate_split
from stjax.train.experiment import build_experiment, schedule_of
from stjax.train.report import finalize
from stjax.train.step import compile_train_step


@dataclasses.dataclass
class LoopState:
  """The loop's own bookkeeping, saved as checkpoint `meta` so restarts continue it exactly."""

  best_val_mae: float | None = None
  best_step: int | None = None
  evals_since_best: int = 0
  wall_time_s: float = 0.0
  stopped_early: bool = False

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def _append_jsonl(path: pathlib.Path, record: dict) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


def _truncate_jsonl(path: pathlib.Path, last_step: int) -> None:
  """Drops records logged after `last_step` (written by a run that died before its next save)."""
  if not path.exists():
    return
  lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= last_step]
  ckpt_lib.atomic_write_text(path, "".join(ln + "\n" for ln in lines))


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns results.json data."""
  # --- setup: data, model init, sharding (nothing is written before the config is checked) ---
  exp = build_experiment(config)
  config, bundle, t = exp.config, exp.bundle, exp.config.train  # kernel choices resolved
  main = distributed.is_main_process()
  workdir = ckpt_lib.prepare_workdir(workdir, config) if main else pathlib.Path(workdir)
  if main:  # run.json, scaler.npz, graph.npz: what evaluate/predict need besides the checkpoint
    run_folder.save_run_data(workdir, exp)
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
  # --- restore ---
  loop = LoopState()
  if checkpoints.latest_step() is not None:
    state, data_state, meta = checkpoints.restore(exp.abstract_state)
    iterator.set_state(data_state)
    loop = LoopState(**meta)
    if main:
      print(f"Resumed from {checkpoints.root / 'last'} at step {int(state.step)}", flush=True)
  else:
    state = exp.init_state()
  first_step = int(jax.device_get(state.step))
  metrics_path = workdir / "metrics.jsonl"
  writer = None
  if main:
    _truncate_jsonl(metrics_path, first_step)
    writer = SummaryWriter(str(workdir / "tensorboard"), purge_step=first_step + 1)
    n_total, n_train = optim.count_params(state.params, exp.trainable)
    print(f"Data: {_describe(bundle)}", flush=True)
    print(
      f"Model {config.model.name}: {n_total:,} params, {n_train:,} trainable; mesh "
      f"{dict(exp.mesh.shape)}; {total_steps} steps ({steps_per_epoch}/epoch)",
      flush=True,
    )

  # --- loop ---
  start_time, pending, window = time.time(), None, []
  step = first_step
  last_saved = first_step if first_step else None
  bar = _progress(total_steps, first_step, main and t.progress_bar)

  def flush(pending_item):
    """Host side of a finished step: NaN check, running mean, log line."""
    s, m = pending_item
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    if not math.isfinite(m["loss"]):
      kept = (
        f"the last good checkpoint (step {checkpoints.latest_step()}) is intact"
        if checkpoints.latest_step() is not None
        else "no checkpoint was saved yet"
      )
      raise UserError(
        f"training diverged: loss is {m['loss']} at step {s}; {kept}; lower "
        "config.optim.learning_rate or enable gradient clipping"
      )
    window.append(m)
    return s, m

  while step < total_steps and not loop.stopped_early:
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
    do_log = step % t.log_every_steps == 0 or do_eval
    if not (do_eval or do_log or step % ckpt_every == 0):
      continue
    flush(pending)
    pending = None
    record = {"step": step, "train_loss": float(np.mean([m["loss"] for m in window]))}
    record.update({k: float(np.mean([m[k] for m in window])) for k in window[-1] if k != "loss"})
    window.clear()
    elapsed = time.time() - start_time
    record["steps_per_s"] = (step - first_step) / max(elapsed, 1e-9)
    bar.set_postfix(loss=f"{record['train_loss']:.4f}")
    if do_eval:
      val, _ = evaluate_split(exp, state, "val", eval_step)
      record.update({f"val_{k}": v for k, v in val.items() if isinstance(v, (int, float))})
      if loop.best_val_mae is None or val["mae"] < loop.best_val_mae:
        loop.best_val_mae, loop.best_step, loop.evals_since_best = float(val["mae"]), step, 0
        checkpoints.save_best(step, state, {"step": step, "val": val})
      else:
        loop.evals_since_best += 1
        if t.patience and loop.evals_since_best >= t.patience:
          loop.stopped_early = True
          bar.write(
            f"Early stop at step {step}: no better val MAE for {t.patience} validations "
            f"(best {loop.best_val_mae:.4f} at step {loop.best_step})"
          )
    if main:
      _append_jsonl(metrics_path, record)
      for k, v in record.items():
        if k != "step":
          writer.add_scalar(k, v, step)
      writer.flush()
    if do_eval or step % ckpt_every == 0 or step == total_steps:
      loop.wall_time_s += time.time() - start_time
      start_time = time.time()
      checkpoints.save(step, state, iterator.get_state(), loop.to_json())
      last_saved = step
  if pending is not None:
    flush(pending)
  bar.close()
  if last_saved != step:  # Unreachable with the save rule above; guards against edits to it.
    raise AssertionError(f"loop ended at step {step} without a checkpoint (last {last_saved})")
  loop.wall_time_s += time.time() - start_time
  if writer is not None:
    writer.close()

  # --- final: the test set, once, with the best checkpoint ---
  return finalize(exp, checkpoints, workdir, steps=step, wall_time_s=loop.wall_time_s)


def _progress(total: int, initial: int, enabled: bool):
  return tqdm(
    total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, smoothing=0.1
  )


def _describe(bundle) -> str:
  return windows.describe(bundle)
