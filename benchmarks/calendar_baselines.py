"""How much of the historical average's strength is the calendar? Naive predictors side by side.

    python benchmarks/calendar_baselines.py --config=configs/sth_sepnet_bike_inflow.py:cpu

For the config's data and protocol, scores (same metrics code as the trainer, val and test):
- time_of_week: the historical average of `stjax.baselines` (knows each target's weekday and time);
- weekday_weekend: training mean per time of day, separately for Mon-Fri and Sat-Sun;
- week_pooled: the mean of time_of_week and weekday_weekend (a weekly profile shrunk towards the
  day type's: what a smooth model of (cell, calendar) could learn beyond the raw slot means);
- time_of_day: training mean per time of day only (what a model that infers the time of day from
  its input window, but not the weekday, can know);
- last_day: the reading one day before each target (seasonal naive; needs T_out <= steps per day).
Means use the steps the training windows read only (like the baseline); missing readings (0 under
the "zero" null rule) are left out of the means.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from stjax.baselines import HistoricalAverage, target_channels, training_sums
from stjax.data.pipeline import eval_batches
from stjax.data.windows import build_data
from stjax.errors import UserError, cli_entry
from stjax.metrics import Metrics

config_flags.DEFINE_config_file("config", None, "experiment config file (uses config.data)")


def group_means(bundle, groups: np.ndarray, num_groups: int) -> np.ndarray:
  """Training mean per group of steps (as the historical average): groups [T] int ->
  table [num_groups, N, C_out]; a group never seen in training predicts 0."""
  total, count = training_sums(bundle, groups, num_groups)
  return (total / np.maximum(count, 1)).astype(np.float32)


def main(argv) -> None:
  del argv
  config = flags.FLAGS.config
  if config is None:
    raise UserError("--config: give a config file, e.g. --config=configs/sth_sepnet_bike_inflow.py:cpu")
  bundle = build_data(config.data)
  ds, p = bundle.dataset, bundle.protocol
  spd = ds.steps_per_day
  if p.output_offsets[-1] > spd:
    raise UserError(f"config.data.output_len: last_day needs horizons <= one day ({spd} steps)")
  ha = HistoricalAverage(bundle)
  tod = ha.slots % spd
  weekend = (ha.slots // spd >= 5).astype(np.int64)
  tables = {
    "weekday_weekend": (group_means(bundle, weekend * spd + tod, 2 * spd), weekend * spd + tod),
    "time_of_day": (group_means(bundle, tod, spd), tod),
  }
  channels = target_channels(bundle)
  print(f"{'predictor':<16} {'val MAE':>9} {'test MAE':>9}")
  scores = {
    name: {} for name in ("time_of_week", "weekday_weekend", "week_pooled", "time_of_day", "last_day")
  }
  for split in ("val", "test"):
    source = bundle.splits[split]
    metrics = {name: Metrics.for_protocol(p, bundle.spec) for name in scores}
    for batch in eval_batches(source, 256):
      steps = source.times[batch["index"]][:, None] + source.output_offsets[None, :]  # [B, T_out]
      preds = {"time_of_week": ha(source, batch), "last_day": ds.values[steps - spd][..., channels]}
      preds.update({name: table[group[steps]] for name, (table, group) in tables.items()})
      preds["week_pooled"] = 0.5 * (preds["time_of_week"] + preds["weekday_weekend"])
      for name, pred in preds.items():
        metrics[name].update(pred, batch["y"], batch["valid"])
    for name in scores:
      scores[name][split] = metrics[name].compute()["mae"]
  for name, s in scores.items():
    print(f"{name:<16} {s['val']:>9.3f} {s['test']:>9.3f}")


if __name__ == "__main__":
  app.run(cli_entry(main))
