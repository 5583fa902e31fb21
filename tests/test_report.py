"""stjax.train.report.results_table: the table a run prints at its end."""

import numpy as np

from stjax.data.protocols import get_protocol
from stjax.train.report import results_table


def _metrics(rng, channels=()):
  m = {k: float(rng.random() * 10) for k in ("mae", "rmse", "mape")}
  m["per_horizon"] = [{"horizon": 1, **{k: m[k] for k in ("mae", "rmse", "mape")}}]
  if channels:
    m["per_channel"] = {c: {k: float(rng.random() * 10) for k in ("mae", "rmse", "mape")} for c in channels}
  return m


def _cells(text, model, metric):
  line = next(ln for ln in text.splitlines() if ln.startswith(f"| {metric} | {model} |"))
  return [c.strip() for c in line.split("|")[1:-1]]


def test_results_table_prints_each_channel_beside_the_average():
  rng = np.random.default_rng()
  results = {
    "test": _metrics(rng, ("inflow", "outflow")),
    "baselines": {"last_value": _metrics(rng, ("inflow", "outflow")), "historical_average": _metrics(rng)},
  }
  text = results_table(results, get_protocol("stssl"))
  assert text.splitlines()[0] == "| metric | model | avg | inflow | outflow | h1 |"
  row = _cells(text, "model", "RMSE")
  t = results["test"]
  assert row[2:] == [
    f"{v:.4f}" for v in (t["rmse"], *(t["per_channel"][c]["rmse"] for c in ("inflow", "outflow")), t["rmse"])
  ]
  lv = results["baselines"]["last_value"]["per_channel"]["outflow"]["mae"]
  assert _cells(text, "last_value", "MAE")[4] == f"{lv:.4f}"
  assert _cells(text, "historical_average", "MAPE")[3:5] == ["-", "-"]  # no channels reported


def test_results_table_without_channels_has_no_channel_columns():
  rng = np.random.default_rng()
  results = {"test": _metrics(rng), "baselines": {"last_value": _metrics(rng)}}
  assert results_table(results, get_protocol("stssl")).splitlines()[0] == "| metric | model | avg | h1 |"
