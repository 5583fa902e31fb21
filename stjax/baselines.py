"""Naive baselines every model must beat, scored by the same metrics code as the models.

- last value: every horizon repeats the last observed input reading (under the "zero" null rule a
  0 is a missing reading, so the last non-zero reading of the window is carried forward).
- historical average: per node and channel, the mean of the TRAINING data (the steps the training
  windows read) at the same time-of-week slot; missing readings (0 under "zero") are excluded. A
  slot never seen in training falls back to the same time of day over all training days, then to
  the node mean; the fraction of such predictions is reported.

Run on any config: `python -m stjax.baselines --config=configs/quickstart.py` prints per-horizon
tables for val and test.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from stjax.data.pipeline import eval_batches
from stjax.data.windows import DataBundle, WindowSource, build_data, describe
from stjax.errors import UserError, cli_entry
from stjax.metrics import Metrics, format_table


def target_channels(bundle: DataBundle) -> list[int]:
  """Indices of the series channels the protocol predicts (all when it names none)."""
  p, c = bundle.protocol, bundle.dataset.num_channels
  return list(p.target_channels) if p.target_channels is not None else list(range(c))


def last_value(bundle: DataBundle, source: WindowSource, batch: dict[str, np.ndarray]) -> np.ndarray:
  """Predictions [B, T_out, N, C_out] for the windows of `batch` (by its `index`), original units.

  Reads the raw input readings of the target channels (not the scaled x, whose inverse is not
  exactly 0 where a reading is missing).
  """
  p = bundle.protocol
  steps = source.times[batch["index"]][:, None] + source.input_offsets[None, :]  # [B, T_in]
  raw = bundle.dataset.values[steps][..., target_channels(bundle)]  # [B, T_in, N, C]
  if p.null_rule == "zero":
    # The last non-zero reading along time; 0 (a miss under this rule) if the window has none.
    observed = raw != 0
    t_in = raw.shape[1]
    last = t_in - 1 - np.argmax(observed[:, ::-1], axis=1)  # [B, N, C]
    value = np.take_along_axis(raw, last[:, None], axis=1)[:, 0]
  else:
    value = raw[:, -1]
  return np.broadcast_to(value[:, None], (raw.shape[0], p.output_len) + value.shape[1:]).copy()


def training_sums(bundle: DataBundle, groups: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
  """Sum and count of the TRAINING readings (the steps the training windows read) per group.

  groups: [T] int, the group of every step of the series. Returns (total, count), each
  [num_groups, N, C_out] float64; missing readings (0 under the "zero" null rule) are not counted.
  """
  ds, p = bundle.dataset, bundle.protocol
  train = bundle.splits["train"]
  end = int(train.times[-1] + p.output_offsets[-1]) + 1  # every step a training window reads
  start = int(train.times[0] + p.input_offsets[0])
  v = ds.values[start:end][:, :, target_channels(bundle)].astype(np.float64)  # [T_train, N, C_out]
  seen = (v != 0) if p.null_rule == "zero" else np.ones(v.shape, bool)
  total = np.zeros((num_groups,) + v.shape[1:])
  count = np.zeros_like(total)
  np.add.at(total, groups[start:end], np.where(seen, v, 0.0))
  np.add.at(count, groups[start:end], seen)
  return total, count


class HistoricalAverage:
  """Time-of-week means of the training data: table [7 * steps_per_day, N, C_out].

  `slots` [T]: the time-of-week slot of every step of the series (dow * steps_per_day + step of day).
  """

  def __init__(self, bundle: DataBundle):
    ds = bundle.dataset
    self.steps_per_day = ds.steps_per_day
    self.slots = self.slot(ds.time_of_day, ds.day_of_week)
    total, count = training_sums(bundle, self.slots, 7 * self.steps_per_day)
    shape = total.shape[1:]
    tod_total = total.reshape(7, self.steps_per_day, *shape).sum(0)
    tod_count = count.reshape(7, self.steps_per_day, *shape).sum(0)
    node_mean = total.sum(0) / np.maximum(count.sum(0), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
      week = total / count
      day = np.tile(tod_total / tod_count, (7, 1, 1))
    self.fallback = count == 0  # [slots, N, C]: week slot unseen
    self.table = np.where(count > 0, week, np.where(np.tile(tod_count, (7, 1, 1)) > 0, day, node_mean))
    self.table = self.table.astype(np.float32)
    self.fallback_used = 0.0

  def slot(self, time_of_day: np.ndarray, day_of_week: np.ndarray) -> np.ndarray:
    """Time-of-week slot index of each step: dow * steps_per_day + round(tod * steps_per_day)."""
    k = (
      np.rint(np.asarray(time_of_day, np.float64) * self.steps_per_day).astype(np.int64) % self.steps_per_day
    )
    return np.asarray(day_of_week, np.int64) * self.steps_per_day + k

  def __call__(self, source: WindowSource, batch: dict[str, np.ndarray]) -> np.ndarray:
    """Predictions [B, T_out, N, C_out] for the windows of `batch` (uses its `index`)."""
    steps = source.times[batch["index"]][:, None] + source.output_offsets[None, :]  # [B, T_out]
    return self.table[self.slots[steps]]


BASELINES = ("last_value", "historical_average")


def evaluate_baselines(bundle: DataBundle, splits=("val", "test"), batch_size: int = 256) -> dict:
  """{baseline: {split: Metrics.compute() result (+ "fallback_fraction" for the HA)}}."""
  ha = HistoricalAverage(bundle)
  results: dict = {name: {} for name in BASELINES}
  for split in splits:
    source = bundle.splits[split]
    metrics = {name: Metrics.for_protocol(bundle.protocol, bundle.spec) for name in BASELINES}
    fallback, total = 0, 0
    for batch in eval_batches(source, batch_size):
      valid = batch["valid"]
      metrics["last_value"].update(last_value(bundle, source, batch), batch["y"], valid)
      metrics["historical_average"].update(ha(source, batch), batch["y"], valid)
      steps = source.times[batch["index"][valid]][:, None] + source.output_offsets[None, :]
      used = ha.fallback[ha.slots[steps]]
      fallback, total = fallback + used.sum(), total + used.size
    for name in BASELINES:
      results[name][split] = metrics[name].compute()
    results["historical_average"][split]["fallback_fraction"] = fallback / max(total, 1)
  return results


def format_results(bundle: DataBundle, results: dict) -> str:
  """Markdown tables: one per baseline and split, listing the protocol's reported horizons."""

  p = bundle.protocol
  horizons = p.report_horizons
  avg = "mean of the per-horizon values" if p.average == "horizon_mean" else "pooled over all horizons"
  out = [f"{describe(bundle)}; null rule {p.null_rule}; average = {avg}; MAPE/WAPE in %", ""]
  for name, per_split in results.items():
    for split, r in per_split.items():
      title = f"**{name}**, {split}"
      if "fallback_fraction" in r and r["fallback_fraction"] > 0:
        title += f" ({100 * r['fallback_fraction']:.1f}% of predictions from unseen time-of-week slots)"
      out += [format_table(r, horizons, title), ""]
  return "\n".join(out)


def main(argv) -> None:

  del argv
  config = flags.FLAGS.config
  if config is None:
    raise UserError("--config: give a config file, e.g. --config=configs/quickstart.py")
  if "data" not in config:
    raise UserError("--config: the config has no `data` section")
  bundle = build_data(config.data)
  train = config.get("train", {})
  batch_size = (
    train.get("eval_batch_size", 0) or train.get("batch_size", 0) or 256
  )  # as the trainer evaluates
  print(format_results(bundle, evaluate_baselines(bundle, batch_size=batch_size)))


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "experiment config file (uses config.data)")
  app.run(cli_entry(main))
