"""grain pipelines over a `WindowSource`: shuffled training batches and padded eval batches.

Training: every epoch is a fresh permutation of the windows (grain's `shuffle`, seeded by
`seed + epoch`), cut into global batches of `global_batch_size` with the remainder dropped. Host h
of P (jax.process_index / process_count) takes rows [h B/P, (h+1) B/P) of every global batch, so all
hosts step together and together see exactly the global batch. The iterator is a grain
`DatasetIterator`: `get_state()` / `set_state()` resume exactly (the trainer checkpoints it).

Evaluation: every window exactly once, in order; the last batch is padded to the fixed size and a
`valid` [B] bool key marks the real rows, so shapes never change and nothing is dropped. Training
batches carry `valid` too (all True) so one step function serves both.
"""

from __future__ import annotations

import grain
import jax
import numpy as np

from stjax.data.windows import WindowSource
from stjax.errors import UserError


def _host_rows(batch_size: int, field: str) -> tuple[int, int]:
  """This host's row range [lo, hi) of a global batch."""
  p, h = jax.process_count(), jax.process_index()
  if batch_size <= 0 or batch_size % p:
    raise UserError(f"{field}: {batch_size} must be a positive multiple of the {p} host(s)")
  per = batch_size // p
  return h * per, (h + 1) * per


def steps_per_epoch(source: WindowSource, global_batch_size: int) -> int:
  """Full global batches per epoch (the remainder is dropped)."""
  return len(source) // global_batch_size


def _read_options(num_threads: int, prefetch: int) -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)


def train_batches(
  source: WindowSource,
  global_batch_size: int,
  seed: int,
  num_epochs: int = 1,
  num_threads: int = 2,
  prefetch: int = 4,
) -> grain.DatasetIterator:
  """Shuffled training batches, this host's shard of each global batch.

  Args:
    source: the training windows.
    global_batch_size: B summed over hosts (must divide by the host count).
    seed: shuffle seed; epoch e uses the permutation of seed + e.
    num_epochs: epochs to iterate (steps = num_epochs * steps_per_epoch).
    num_threads, prefetch: grain read threads and prefetch buffer (batches).

  Returns:
    A grain iterator of dicts x [B/P, T_in, N, C_in], tod, dow, y, index, valid; with
    `get_state()` / `set_state()`.
  """
  lo, hi = _host_rows(global_batch_size, "config.train.batch_size")
  n, per_epoch = len(source), steps_per_epoch(source, global_batch_size)
  if per_epoch == 0:
    raise UserError(
      f"config.train.batch_size: {global_batch_size} is larger than the {n} {source.split} windows"
    )
  if num_epochs < 1:
    raise UserError(f"config.train.num_epochs: must be >= 1, got {num_epochs}")
  if not 0 <= seed < 2**32:
    raise UserError(f"config.seed: must be in [0, 2**32), got {seed}")
  # order[e * n + i] = the i-th window of epoch e (grain reseeds the shuffle every epoch).
  order = grain.MapDataset.range(n).shuffle(seed=seed).repeat(num_epochs)

  def fetch(step: int) -> dict[str, np.ndarray]:
    epoch, j = divmod(step, per_epoch)
    base = epoch * n + j * global_batch_size
    idx = [order[base + r] for r in range(lo, hi)]
    b = source.batch(idx)
    b["valid"] = np.ones(len(idx), bool)
    return b

  ds = grain.MapDataset.range(num_epochs * per_epoch).map(fetch)
  return iter(ds.to_iter_dataset(_read_options(num_threads, prefetch)))


def eval_batches(
  source: WindowSource, batch_size: int, num_threads: int = 2, prefetch: int = 4
) -> grain.DatasetIterator:
  """All windows in order, this host's shard of each fixed-size batch, last batch padded.

  Padding rows repeat the last window and have valid = False.
  """
  lo, hi = _host_rows(batch_size, "config.train.eval_batch_size")
  n = len(source)
  num_batches = -(-n // batch_size)

  def fetch(k: int) -> dict[str, np.ndarray]:
    rows = np.arange(k * batch_size + lo, k * batch_size + hi)
    b = source.batch(np.minimum(rows, n - 1))
    b["valid"] = rows < n
    return b

  ds = grain.MapDataset.range(num_batches).map(fetch)
  return iter(ds.to_iter_dataset(_read_options(num_threads, prefetch)))
