"""Checkpoints of a run: orbax managers for the last K steps and the best validation step.

Layout in the workdir:

  checkpoints/last/<step>/{state,data,meta}   every `checkpoint_every_steps` (keep last K)
  checkpoints/best/<step>/{state,meta}        the step with the best validation MAE (keep 1)
  config.json                                 the resolved config the checkpoints belong to

`state` is the whole `TrainState` (params, optimizer state, model state collections, step, RNG),
`data` the training iterator position, `meta` the loop's bookkeeping (best validation so far,
patience counter, wall time). Orbax writes each step into a temporary folder and renames it when
complete, so a crash or a full disk mid-save leaves the previous checkpoints as they were; old
steps are deleted only after a newer one is complete.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from stjax.errors import UserError
from stjax.kernels import default_kernel_config

# Config fields that may change between a run and its restart without refusing to resume.
_RESUMABLE_FIELDS = ("overwrite", "kernels")  # may differ on resume (kernels: same maths)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to `path` via a temporary file in the same folder and a rename."""
  path = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


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


def prepare_workdir(workdir: str | os.PathLike, config) -> pathlib.Path:
  """Creates the workdir or checks that it belongs to this config; writes config.json.

  A workdir that holds a run of a different config is refused unless `config.overwrite`, in which
  case that run's outputs and checkpoints are removed first. Returns the workdir path.
  """
  workdir = pathlib.Path(workdir)
  new = config_to_dict(config)
  old_path = workdir / "config.json"
  if old_path.exists():
    try:
      old = json.loads(old_path.read_text())
    except json.JSONDecodeError as e:
      raise UserError(f"{old_path}: not valid JSON ({e}); use a new --workdir") from None
    for k in _RESUMABLE_FIELDS:
      old.pop(k, None)
    differ = _diff(old, {k: v for k, v in new.items() if k not in _RESUMABLE_FIELDS})
    if differ:
      if not config.get("overwrite", False):
        shown = ", ".join(differ[:5]) + (f" (+{len(differ) - 5} more)" if len(differ) > 5 else "")
        raise UserError(
          f"--workdir {workdir} holds a run of a different config ({shown} differ); "
          "use a new --workdir or pass --config.overwrite=True to replace it"
        )
      for name in ("checkpoints", "metrics.jsonl", "results.json", "results.md", "tensorboard", "plots"):
        p = workdir / name
        if p.is_dir():
          shutil.rmtree(p)
        elif p.exists():
          p.unlink()
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise UserError(f"--workdir {workdir}: cannot create it ({e.strerror})") from None
  atomic_write_text(old_path, json.dumps(new, indent=2, sort_keys=True) + "\n")
  return workdir


def abstract_like(tree) -> Any:
  """ShapeDtypeStructs (with shardings) of a tree of arrays: an orbax restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpoints:
  """The last-K and best checkpoints of one workdir."""

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

    self._last = ocp.CheckpointManager(
      root / "last", options=options(max(1, keep)), item_names=("state", "data", "meta")
    )
    self._best = ocp.CheckpointManager(root / "best", options=options(1), item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._last.latest_step()

  def best_step(self) -> int | None:
    return self._best.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._last.all_steps())

  def save(self, step: int, state, data_state: dict, meta: dict) -> None:
    """Saves `state` + iterator position + loop bookkeeping as checkpoint `step` (blocking)."""
    args = ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(meta)
    )
    self._save(self._last, step, args)

  def save_best(self, step: int, state, meta: dict) -> None:
    """Replaces the best checkpoint with `state` at `step` (the old one goes once this is done)."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    self._save(self._best, step, args)

  def _save(self, manager, step: int, args) -> None:
    last_good = manager.latest_step()
    try:
      manager.save(step, args=args, force=True)
      manager.wait_until_finished()
    except OSError as e:
      kept = (
        f"the last good checkpoint (step {last_good}) is intact"
        if last_good is not None
        else "no earlier checkpoint exists"
      )
      raise UserError(
        f"checkpoint: saving step {step} under {manager.directory} failed ({e.strerror or e}); {kept}"
      ) from None

  def restore(self, abstract_state, step: int | None = None) -> tuple[Any, dict, dict]:
    """(state, data_state, meta) of checkpoint `step` (default latest), placed like `abstract_state`."""
    step = self._last.latest_step() if step is None else step
    if step is None:
      raise UserError(f"checkpoint: no checkpoint under {self.root / 'last'}")
    out = self._last.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore(),
      ),
    )
    return out["state"], out["data"], out["meta"]

  def restore_best(self, abstract_state) -> tuple[Any, dict]:
    """(state, meta) of the best checkpoint."""
    step = self._best.latest_step()
    if step is None:
      raise UserError(
        f"checkpoint: no best checkpoint under {self.root / 'best'} (did the run reach its first validation?)"
      )
    out = self._best.restore(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()),
    )
    return out["state"], out["meta"]

  def close(self) -> None:
    self._last.close()
    self._best.close()


def _tuples(x):
  """JSON lists back to tuples (configs use tuples; JSON has only lists)."""
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def load_run_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The resolved config a run wrote to DIR/config.json."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    raise UserError(f"--workdir {workdir}: no config.json (not a stjax.train run folder)")
  try:
    fields = _tuples(json.loads(path.read_text()))
  except json.JSONDecodeError as e:
    raise UserError(f"{path}: not valid JSON ({e})") from None
  if "kernels" not in fields:  # a run from before config.kernels: its expert choice moves there
    fields["kernels"] = dict(default_kernel_config())
    fields["kernels"]["experts"] = fields.get("model", {}).pop("expert_dispatch", "auto")
  return ml_collections.ConfigDict(fields)
