"""Resuming a run: the newest readable checkpoint, and a best checkpoint that agrees with it.

`restore_newest_intact` tries the kept steps of checkpoints/last from the newest down; a step that
cannot be read (a truncated file, bad JSON) is moved to checkpoints/quarantine with one line saying
which and why, once an older step has restored (if none restores, nothing is moved and the error
lists every step's reason: then the checkpoints, not one damaged file, are at odds with the run).
`reconcile_best` makes checkpoints/best agree with the bookkeeping of the step resumed from.
"""

from __future__ import annotations

from typing import Any, Callable

from stjax.errors import UserError
from stjax.train.checkpoint import Checkpoints, DamagedCheckpoint


def restore_newest_intact(
  checkpoints: Checkpoints, abstract_state, say: Callable[[str], None]
) -> tuple[Any, dict, dict] | None:
  """(state, data_state, meta) of the newest readable step of checkpoints/last; None if there is
  no step at all. UserError when steps exist but none can be read."""
  damaged = []
  for step in sorted(checkpoints.all_steps(), reverse=True):
    try:
      state, data_state, meta = checkpoints.restore(abstract_state, step)
    except DamagedCheckpoint as e:
      damaged.append((step, e))
      continue
    for bad, e in damaged:
      moved = checkpoints.quarantine("last", bad)
      say(f"checkpoint: skipped step {bad}, {e.path} cannot be read ({e.why}); moved it to {moved}")
    return state, data_state, meta
  if damaged:
    reasons = "; ".join(f"step {step}: {e.why}" for step, e in damaged)
    raise UserError(
      f"checkpoint: no readable checkpoint under {checkpoints.root / 'last'} ({reasons}); if they "
      "are damaged, move that folder away to start the run over"
    )
  return None


def reconcile_best(
  checkpoints: Checkpoints,
  step: int,
  state,
  best_step: int | None,
  best_val_mae: float | None,
  say: Callable[[str], None],
) -> tuple[int | None, float | None]:
  """Makes checkpoints/best agree with a run resumed at `step` whose bookkeeping names best
  `best_step` (val MAE `best_val_mae`); returns the (best_step, best_val_mae) to continue with.

  Best steps after `step` belong to steps the run redoes: they are removed. A missing `best_step`
  equal to `step` (a crash between the two saves of that step) is saved again from `state`; an
  older missing one is replaced by the newest best step kept, with its own validation MAE.
  """
  for later in [s for s in checkpoints.best_steps() if s > step]:
    checkpoints.delete_best(later)
    say(f"checkpoint: removed best step {later}, made after step {step} which the run resumes from")
  if best_step is None or best_step in checkpoints.best_steps():
    return best_step, best_val_mae
  if best_step == step:
    checkpoints.save_best(step, state, {"step": step, "val": {"mae": best_val_mae}})
    return best_step, best_val_mae
  kept = sorted(checkpoints.best_steps(), reverse=True)
  if not kept:
    say(f"checkpoint: best step {best_step} is gone; the next validation sets a new best")
    return None, None
  meta = checkpoints.best_meta(kept[0])
  say(f"checkpoint: best step {best_step} is gone; continuing from best step {kept[0]}")
  return kept[0], float(meta["val"]["mae"])
