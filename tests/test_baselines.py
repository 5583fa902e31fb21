"""Naive baselines: hand-computable cases, real-data tables (pytest -s prints them), the CLI."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from stjax.baselines import HistoricalAverage, evaluate_baselines, format_results, last_value
from stjax.data import Dataset, build_data, bundle_from_dataset, default_data_config, get_protocol
from stjax.data.dataset import calendar_features

STEP = 360  # minutes: 4 steps per day, 28 time-of-week slots


def six_hourly(values):
  ts = np.datetime64("2024-01-01T00:00", "s") + np.arange(len(values)) * np.timedelta64(STEP * 60, "s")
  tod, dow = calendar_features(ts)
  return Dataset("hand", np.asarray(values, np.float32), ("v",), float(STEP), tod, dow, timestamps=ts)


def test_last_value_carries_the_last_observed_reading():
  v = np.zeros((40, 2, 1))
  v[:, 0, 0] = np.arange(1, 41)
  v[:, 1, 0] = 5.0
  v[10:12, 1, 0] = 0.0  # missing at steps 10, 11
  v[20:23, 1, 0] = 0.0  # a whole input window missing
  ds = six_hourly(v)
  dcrnn = bundle_from_dataset(ds, get_protocol("dcrnn").resolve(4, input_len=3, output_len=2))
  src = dcrnn.splits["train"]
  idx = np.searchsorted(src.times, [11, 22])  # current steps 11 and 22
  batch = src.batch(idx)
  pred = last_value(dcrnn, src, batch)
  assert pred.shape == (2, 2, 2, 1)
  np.testing.assert_array_equal(pred[0, :, :, 0], [[12, 5], [12, 5]])  # 0 at step 11 is skipped
  np.testing.assert_array_equal(pred[1, :, :, 0], [[23, 0], [23, 0]])  # nothing observed: 0
  raw = bundle_from_dataset(ds, get_protocol("sthsepnet").resolve(4, input_len=3, output_len=2))
  src = raw.splits["train"]
  batch = src.batch(np.searchsorted(src.times, [11]))
  np.testing.assert_array_equal(last_value(raw, src, batch)[0, :, :, 0], [[12, 0], [12, 0]])  # no null rule


def test_historical_average_is_the_training_time_of_week_mean():
  t = np.arange(84)  # three weeks
  slot, week = t % 28, t // 28
  v = np.stack([slot + 10.0 * week, 2 * slot + 1.0], 1)[:, :, None]
  v[1, 0, 0] = 0.0  # a missing reading: excluded from the mean
  b = bundle_from_dataset(six_hourly(v), get_protocol("dcrnn").resolve(4, input_len=3, output_len=2))
  assert b.splits["train"].times[[0, -1]].tolist() == [2, 57]  # training reads steps 0..59
  ha = HistoricalAverage(b)
  table = ha.table[:, :, 0]
  want = np.where(np.arange(28) < 4, np.arange(28) + 10.0, np.arange(28) + 5.0)  # weeks 0-2 vs 0-1
  want[0] = (10 + 20) / 2  # step 0 reads 0: also a missing reading
  want[1] = (11 + 21) / 2
  np.testing.assert_allclose(table[:, 0], want)
  np.testing.assert_allclose(table[:, 1], 2 * np.arange(28) + 1.0)
  assert not ha.fallback.any()
  src = b.splits["test"]
  batch = src.batch([0, 5])
  steps = src.times[[0, 5]][:, None] + np.array([1, 2])
  np.testing.assert_allclose(ha(src, batch)[:, :, 0, 0], want[steps % 28])


def test_evaluation_floors_are_exact_on_their_own_worlds():
  t = np.arange(28 * 6)
  periodic = np.stack([np.sin(t % 28) + 10, np.cos(t % 28) + 20], 1)[:, :, None]
  r = evaluate_baselines(
    bundle_from_dataset(six_hourly(periodic), get_protocol("dcrnn").resolve(4, 3, 2)), batch_size=8
  )
  for split in ("val", "test"):
    assert r["historical_average"][split]["mae"] == pytest.approx(0, abs=1e-5)
    assert r["last_value"][split]["mae"] > 0.3
  flat = np.broadcast_to(np.array([3.0, 9.0])[None, :, None], (60, 2, 1))
  r = evaluate_baselines(
    bundle_from_dataset(six_hourly(flat), get_protocol("stllm").resolve(4, 3, 2)), batch_size=8
  )
  assert r["last_value"]["test"]["mae"] == 0 and r["last_value"]["test"]["per_horizon"][1]["horizon"] == 2


def real(name):
  c = default_data_config()
  c.name = name
  bundle = build_data(c)
  results = evaluate_baselines(bundle)
  print("\n" + format_results(bundle, results))
  return results


def test_real_nycbike1_stssl_table(shared_data):
  r = real("nycbike1")
  ha, lv = r["historical_average"]["test"]["per_channel"], r["last_value"]["test"]["per_channel"]
  # The numbers in docs/protocols.md.
  assert ha["inflow"]["mae"] == pytest.approx(7.390, abs=2e-3)
  assert ha["outflow"]["mae"] == pytest.approx(7.595, abs=2e-3)
  assert lv["inflow"]["mae"] == pytest.approx(10.695, abs=2e-3)
  assert ha["inflow"]["mape"] == pytest.approx(31.64, abs=0.02)


def test_real_metr_la_excerpt_dcrnn_table(shared_data):
  r = real("metr-la-excerpt")
  lv = r["last_value"]["test"]
  mae = [h["mae"] for h in lv["per_horizon"]]
  assert all(a < b for a, b in zip(mae, mae[1:]))  # error grows with the horizon
  assert lv["mae"] == pytest.approx(4.388, abs=2e-3)
  assert lv["per_horizon"][11]["mae"] == pytest.approx(5.731, abs=2e-3)


def tiny_synthetic_config(tmp_path, days: int):
  """A config file whose data section is 5 synthetic nodes over `days` days of 5-minute steps."""
  cfg = tmp_path / "tiny.py"
  cfg.write_text(
    textwrap.dedent(f"""
      import ml_collections
      from stjax.data import default_data_config
      def get_config():
        c = ml_collections.ConfigDict()
        c.data = default_data_config()
        c.data.synthetic.num_nodes = 5
        c.data.synthetic.num_steps = 288 * {days}
        return c
      """)
  )
  return cfg


def test_cli_prints_tables_and_reports_config_errors(tmp_path):
  cfg = tiny_synthetic_config(tmp_path, days=8)
  run = subprocess.run(
    [sys.executable, "-m", "stjax.baselines", f"--config={cfg}"], capture_output=True, text=True, timeout=300
  )
  assert run.returncode == 0, run.stderr
  assert "**historical_average**, test" in run.stdout and "| 12 |" in run.stdout
  run = subprocess.run(
    [sys.executable, "-m", "stjax.baselines", f"--config={cfg}", "--config.data.protocol=dcrn"],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert run.returncode == 2
  assert run.stderr.strip().splitlines()[-1] == (
    "stjax: error: data.protocol: unknown protocol 'dcrn'; known: dcrnn, stllm, sthsepnet, stssl, pems"
  )


def test_calendar_baselines_script_matches_the_baselines(tmp_path):
  """benchmarks/calendar_baselines.py: its time_of_week row is stjax.baselines' historical average,
  its last_day row the reading one day before each target (NumPy), scored by the same Metrics."""
  from stjax.data.pipeline import eval_batches
  from stjax.metrics import Metrics

  cfg = tiny_synthetic_config(tmp_path, days=10)
  script = ["benchmarks/calendar_baselines.py", f"--config={cfg}"]
  run = subprocess.run([sys.executable] + script, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr
  rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in run.stdout.splitlines()[1:]}
  assert set(rows) == {"time_of_week", "weekday_weekend", "week_pooled", "time_of_day", "last_day"}
  for i in range(2):  # the pooled profile is the mean of two predictors: MAE at most their mean MAE
    assert rows["week_pooled"][i] <= 0.5 * (rows["time_of_week"][i] + rows["weekday_weekend"][i]) + 1e-9
    assert rows["week_pooled"][i] > 0

  config = default_data_config()
  config.synthetic.num_nodes, config.synthetic.num_steps = 5, 288 * 10
  bundle = build_data(config)
  ha = evaluate_baselines(bundle)["historical_average"]
  assert rows["time_of_week"] == pytest.approx([ha["val"]["mae"], ha["test"]["mae"]], abs=1e-3)
  for i, split in enumerate(("val", "test")):
    source, metrics = bundle.splits[split], Metrics.for_protocol(bundle.protocol, bundle.spec)
    for batch in eval_batches(source, 64):
      steps = source.times[batch["index"]][:, None] + source.output_offsets[None, :]
      metrics.update(bundle.dataset.values[steps - 288][..., :1], batch["y"], batch["valid"])
    assert rows["last_day"][i] == pytest.approx(metrics.compute()["mae"], abs=1e-3)

  run = subprocess.run(
    [sys.executable] + script + ["--config.data.output_len=300"], capture_output=True, text=True, timeout=300
  )
  assert run.returncode == 2
  assert run.stderr.strip().splitlines()[-1].startswith("stjax: error: config.data.output_len:")
