"""Checkpoints of a run: orbax managers for the last K steps and the best validation step.

Layout in the workdir:

  checkpoints/last/<step>/{state,data,meta}   every `checkpoint_every_steps` (keep last K)
  checkpoints/best/<step>/{state,meta}        the step with the best validation MAE, and the one before
  checkpoints/quarantine/<last|best>-<step>   steps never to resume from (unreadable, or diverged)
  config.json                                 the resolved config the checkpoints belong to
  .lock                                       held by the run training in this workdir

`state` is the whole `TrainState` (params, optimizer state, model state collections, step, RNG),
`data` the training iterator position, `meta` the loop's bookkeeping (best validation so far,
patience counter, wall time). Orbax writes each step into a temporary folder and renames it when
complete, so a crash or a full disk mid-save leaves the previous checkpoints as they were; old
steps are deleted only after a newer one is complete. The loop saves `last` before `best`, and a
restart repairs a missing best from `last` (stjax/train/resume.py).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from stjax.data.run_data import json_tuples
from stjax.errors import UserError
from stjax.kernels import default_kernel_config
from stjax.train.orbax_quiet import quiet_orbax
from stjax.train.safe_write import atomic_write_text, reason, user_errors

# Config fields that may change between a run and its restart (dotted paths under `config`): they
# change neither the shapes of the saved state nor what its numbers mean. Everything else (model,
# data, seed, batch size, optimizer kind, betas, weight decay, clipping, trainability, mesh) is
# part of the run's identity and refused, since the saved state was made under it.
_RESUMABLE_FIELDS = (
  "overwrite",
  "kernels",  # implementations of the same maths
  # The learning-rate schedule: a function of the step count kept in the optimizer state.
  "optim.learning_rate",
  "optim.schedule",
  "optim.warmup_steps",
  "optim.min_lr_ratio",
  "optim.milestones",
  "optim.decay_factor",
  # Length and cadence of the run (the data order does not depend on them).
  "train.max_steps",
  "train.num_epochs",
  "train.eval_every_steps",
  "train.checkpoint_every_steps",
  "train.keep_checkpoints",
  "train.log_every_steps",
  "train.patience",
  "train.progress_bar",
  "train.plot_nodes",
  "train.plot_node_ids",
  "data.nonnegative",  # clips forecasts at evaluation only
)
# What a run writes into its workdir besides config.json (removed by --config.overwrite=True).
RUN_OUTPUTS = (
  "checkpoints",
  "metrics.jsonl",
  "tensorboard",
  "results.json",
  "results.md",
  "predictions.png",
  "training_curves.png",
  "run.json",  # the run's data facts (stjax.data.run_data), rewritten at the start of a run
  "scaler.npz",
  "graph.npz",
)


def config_to_dict(config) -> dict[str, Any]:
  """A ConfigDict as plain JSON data (tuples become lists), for config.json and comparisons."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _diff(a: Any, b: Any, prefix: str = "config") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      out += _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}.{k}")
    return out
  return [] if a == b else [prefix]


def _resumable(path: str) -> bool:
  return any(path == f"config.{f}" or path.startswith(f"config.{f}.") for f in _RESUMABLE_FIELDS)


def _value_at(tree: dict, path: str) -> Any:
  for k in path.split(".")[1:]:
    tree = tree.get(k, "<missing>") if isinstance(tree, dict) else "<missing>"
  return tree


def has_checkpoint(workdir: str | os.PathLike) -> bool:
  """Whether `workdir` holds a completed checkpoint of checkpoints/last (a run to resume)."""
  last = pathlib.Path(workdir) / "checkpoints" / "last"
  return last.is_dir() and any(p.name.isdigit() for p in last.iterdir())


def _remove_outputs(workdir: pathlib.Path) -> None:
  for name in RUN_OUTPUTS:
    p = workdir / name
    with user_errors(p, "remove it"):
      if p.is_dir():
        shutil.rmtree(p)
      elif p.exists():
        p.unlink()


def prepare_workdir(workdir: str | os.PathLike, config) -> pathlib.Path:
  """Creates the workdir or checks that it belongs to this config; writes config.json.

  A workdir whose checkpoints were made under a different config is refused (naming the fields)
  unless `config.overwrite`, in which case that run's outputs and checkpoints are removed first;
  fields in `_RESUMABLE_FIELDS` may differ (one line lists the changes). A workdir without a
  checkpoint claims nothing: its outputs are replaced. Returns the workdir path.
  """
  workdir = pathlib.Path(workdir)
  new = config_to_dict(config)
  old_path = workdir / "config.json"
  if old_path.exists():
    try:
      old = json.loads(old_path.read_text())
    except json.JSONDecodeError as e:
      raise UserError(f"{old_path}: not valid JSON ({e}); use a new --workdir") from None
    differ = _diff(old, new)
    fixed = [p for p in differ if not _resumable(p)]
    if fixed and has_checkpoint(workdir):
      if not config.get("overwrite", False):
        shown = ", ".join(fixed[:5]) + (f" (+{len(fixed) - 5} more)" if len(fixed) > 5 else "")
        raise UserError(
          f"--workdir {workdir} holds a run of a different config ({shown} differ); "
          "use a new --workdir or pass --config.overwrite=True to replace it"
        )
      _remove_outputs(workdir)
    elif fixed:  # a run that never saved a checkpoint (e.g. it failed during setup)
      print(
        f"stjax: warning: --workdir {workdir}: replacing a run of another config that saved no checkpoint",
        file=sys.stderr,
      )
      _remove_outputs(workdir)
    else:
      changed = [p for p in differ if p not in ("config.overwrite",) and not p.startswith("config.kernels")]
      if changed and has_checkpoint(workdir):
        shown = ", ".join(f"{p} ({_value_at(old, p)} -> {_value_at(new, p)})" for p in changed)
        print(f"Resuming with changed {shown}", flush=True)
  with user_errors(workdir, "create it"):
    workdir.mkdir(parents=True, exist_ok=True)
  atomic_write_text(old_path, json.dumps(new, indent=2, sort_keys=True) + "\n")
  return workdir


def abstract_like(tree) -> Any:
  """ShapeDtypeStructs (with shardings) of a tree of arrays: an orbax restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class DamagedCheckpoint(UserError):
  """A checkpoint step that cannot be read back (a truncated or missing file, bad JSON)."""

  def __init__(self, path: pathlib.Path, why: str):
    self.path, self.why = path, why
    super().__init__(f"checkpoint: {path} cannot be read ({why})")


class Checkpoints:
  """The last-K and best checkpoints of one workdir.

  Saves are idempotent: a step already on disk (left by an interrupted run) is replaced. A failed
  save (full disk, read-only folder) removes its temporary folder and raises one line naming the
  checkpoint the run can resume from. `best` keeps the best step and the one before it, so a
  resume that falls back one checkpoint still finds the best its bookkeeping names.
  """

  def __init__(self, workdir: str | os.PathLike, keep: int = 3, read_only: bool = False):
    root = pathlib.Path(workdir).resolve() / "checkpoints"
    self.root = root
    if read_only and not root.is_dir():
      raise UserError(f"--workdir {workdir}: no checkpoints folder")

    def options(max_to_keep):
      return ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=not read_only,
        read_only=read_only,
        cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=False,
      )

    with user_errors(root, "create the checkpoints folder"), quiet_orbax():
      self._last = ocp.CheckpointManager(
        root / "last", options=options(max(1, keep)), item_names=("state", "data", "meta")
      )
      self._best = ocp.CheckpointManager(root / "best", options=options(2), item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._last.latest_step()

  def best_step(self) -> int | None:
    return self._best.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._last.all_steps())

  def best_steps(self) -> list[int]:
    return list(self._best.all_steps())

  def save(self, step: int, state, data_state: dict, meta: dict) -> None:
    """Saves `state` + iterator position + loop bookkeeping as checkpoint `step` (blocking)."""
    args = ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(meta)
    )
    self._save(self._last, step, args)

  def save_best(self, step: int, state, meta: dict) -> None:
    """Saves the best checkpoint `state` at `step` (older best steps go once this one is complete)."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    self._save(self._best, step, args)

  def _save(self, manager, step: int, args) -> None:
    try:
      with quiet_orbax():
        if step in manager.all_steps():  # from an interrupted run that is now redoing this step
          manager.delete(step)
        manager.save(step, args=args, force=True)
        manager.wait_until_finished()
    except (OSError, ValueError) as e:  # tensorstore reports a full disk as ValueError
      for tmp in manager.directory.glob("*.orbax-checkpoint-tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)
      manager.reload()
      resume = self._last.latest_step()
      kept = (
        f"the run can resume from {self.root / 'last' / str(resume)}"
        if resume is not None
        else "no checkpoint to resume from was saved yet"
      )
      raise UserError(
        f"checkpoint: saving step {step} under {manager.directory} failed ({reason(e)}); {kept}"
      ) from None

  def restore(self, abstract_state, step: int | None = None) -> tuple[Any, dict, dict]:
    """(state, data_state, meta) of checkpoint `step` (default latest), placed like `abstract_state`.
    DamagedCheckpoint if it cannot be read."""
    step = self._last.latest_step() if step is None else step
    if step is None:
      raise UserError(f"checkpoint: no checkpoint under {self.root / 'last'}")
    args = ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()
    )
    out = self._read(self._last, step, args)
    return out["state"], out["data"], out["meta"]

  def restore_best(self, abstract_state) -> tuple[Any, dict]:
    """(state, meta) of the newest readable best checkpoint; a damaged newer one is skipped with
    one line on stderr saying which and why."""
    steps = sorted(self._best.all_steps(), reverse=True)
    if not steps:
      raise UserError(
        f"checkpoint: no best checkpoint under {self.root / 'best'} (did the run reach its first validation?)"
      )
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
    damaged = []
    for step in steps:
      try:
        out = self._read(self._best, step, args)
      except DamagedCheckpoint as e:
        damaged.append(e)
        continue
      for e in damaged:
        print(f"stjax: warning: {e}; using best step {step} instead", file=sys.stderr, flush=True)
      return out["state"], out["meta"]
    raise UserError("; ".join(str(e) for e in damaged))

  def best_meta(self, step: int) -> dict:
    """The `meta` item of best checkpoint `step` (DamagedCheckpoint if unreadable)."""
    return self._read(self._best, step, ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def _read(self, manager, step: int, args) -> Any:
    try:
      with quiet_orbax():
        return manager.restore(step, args=args)
    except Exception as e:  # whatever a truncated/missing file raises (ValueError, OSError, ...)
      raise DamagedCheckpoint(manager.directory / str(step), reason(e)) from None

  def delete_best(self, step: int) -> None:
    self._best.delete(step)

  def quarantine(self, kind: str, step: int) -> pathlib.Path:
    """Moves checkpoint `kind` ("last" or "best") `step` to checkpoints/quarantine/<kind>-<step>
    (kept for inspection, never resumed from); returns where it went."""
    manager = self._last if kind == "last" else self._best
    target = self.root / "quarantine" / f"{kind}-{step}"
    n = 1
    while target.exists():
      target, n = self.root / "quarantine" / f"{kind}-{step}.{n}", n + 1
    if jax.process_index() == 0:
      with user_errors(target, "move a checkpoint there"):
        target.parent.mkdir(parents=True, exist_ok=True)
        (manager.directory / str(step)).rename(target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f"stjax.checkpoint: quarantined {kind} {step}")
    manager.reload()
    return target

  def close(self) -> None:
    self._last.close()
    self._best.close()


def load_run_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The resolved config a run wrote to DIR/config.json."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    raise UserError(f"--workdir {workdir}: no config.json (not a stjax.train run folder)")
  try:
    fields = json_tuples(json.loads(path.read_text()))
  except json.JSONDecodeError as e:
    raise UserError(f"{path}: not valid JSON ({e})") from None
  if "kernels" not in fields:  # a run from before config.kernels: its expert choice moves there
    fields["kernels"] = dict(default_kernel_config())
    fields["kernels"]["experts"] = fields.get("model", {}).pop("expert_dispatch", "auto")
  return ml_collections.ConfigDict(fields)
