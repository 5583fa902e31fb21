"""benchmarks/seeds.py: the mean +- std table (per-horizon columns, baseline rows) and the horizon plot."""

import json
import statistics

import numpy as np
import pytest

from benchmarks import seeds


def _metrics(rng, scale):
  per_h = [{"horizon": h, "mae": float(scale * h + rng.random())} for h in range(1, 13)]
  return {
    "mae": float(np.mean([r["mae"] for r in per_h])),
    "rmse": float(rng.random() + 2 * scale),
    "mape": float(rng.random() * 10),
    "per_horizon": per_h,
  }


def _write_seeds(root, rng, n=3):
  baselines = {"last_value": _metrics(rng, 0.5), "historical_average": _metrics(rng, 0.0)}
  runs = []
  for k in range(n):
    run = {"test": _metrics(rng, 0.3), "val": {"mae": float(rng.random())}, "steps": 10, "best_step": 8}
    run["baselines"] = baselines
    (root / f"seed{k}").mkdir(parents=True)
    (root / f"seed{k}" / "results.json").write_text(json.dumps(run))
    (root / f"seed{k}.cost.json").write_text(json.dumps({"wall_s": 10.0 + k, "cpu_s": 20.0}))
    runs.append(run)
  return runs, baselines


def _row(text, label):
  return next(line for line in text.splitlines() if f"| {label} |" in line).split("|")[1:-1]


def test_seeds_table_has_horizon_columns_and_baseline_rows(tmp_path):
  rng = np.random.default_rng()
  runs, baselines = _write_seeds(tmp_path / "sweep", rng)
  text = seeds.table([tmp_path / "sweep"], horizons=(3, 12))
  header = text.splitlines()[0]
  assert "MAE @3" in header and "MAE @12" in header and "MAE @6" not in header
  mean_row = [c.strip() for c in _row(text, "mean +- std (3)")]
  at12 = [r["test"]["per_horizon"][11]["mae"] for r in runs]
  assert mean_row[9] == f"**{statistics.mean(at12):.3f} +- {statistics.stdev(at12):.3f}**"
  assert mean_row[3] == "33"  # total wall s
  ha_row = [c.strip() for c in _row(text, "historical average")]
  assert ha_row[5] == f"{baselines['historical_average']['mae']:.3f}"
  assert ha_row[8] == f"{baselines['historical_average']['per_horizon'][2]['mae']:.3f}"
  lv_row = [c.strip() for c in _row(text, "last value")]
  assert lv_row[9] == f"{baselines['last_value']['per_horizon'][11]['mae']:.3f}"


def test_seeds_plot_writes_a_png_and_an_empty_sweep_is_one_line(tmp_path, capsys):
  _write_seeds(tmp_path / "sweep", np.random.default_rng())
  out = tmp_path / "fig" / "h.png"
  seeds.main(["plot", str(tmp_path / "sweep"), f"--out={out}"])
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  (tmp_path / "empty").mkdir()
  with pytest.raises(SystemExit, match="nothing finished yet"):
    seeds.main(["table", str(tmp_path / "empty")])


def test_seeds_curves_read_wall_minutes_and_validation_mae(tmp_path, capsys):
  rng = np.random.default_rng()
  _write_seeds(tmp_path / "sweep", rng, n=2)
  walls, maes = np.sort(rng.random(5)) * 600, rng.random(5) + 3
  lines = []
  for k, (w, v) in enumerate(zip(walls, maes)):
    lines.append({"step": 10 * k + 5, "train_loss": 1.0, "wall_s": float(w - 1)})  # no validation
    lines.append({"step": 10 * k + 10, "train_loss": 1.0, "wall_s": float(w), "val_mae": float(v)})
  for k in range(2):
    text = "\n".join(json.dumps(r) for r in lines) + "\n"
    (tmp_path / "sweep" / f"seed{k}" / "metrics.jsonl").write_text(text)
  minutes, mae = seeds.val_curve(tmp_path / "sweep" / "seed0")
  np.testing.assert_allclose(minutes, walls / 60)
  np.testing.assert_allclose(mae, maes)
  out = tmp_path / "curves.png"
  seeds.main(["curves", str(tmp_path / "sweep"), f"--out={out}"])
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  old = tmp_path / "old" / "seed0"
  old.mkdir(parents=True)
  (old / "metrics.jsonl").write_text(json.dumps({"step": 1, "val_mae": 3.0}) + "\n")
  with pytest.raises(SystemExit, match="without `wall_s`"):
    seeds.main(["curves", str(tmp_path / "old"), f"--out={out}"])


def test_seeds_table_has_a_column_per_channel(tmp_path):
  rng = np.random.default_rng()
  runs, baselines = _write_seeds(tmp_path / "sweep", rng)
  for k, run in enumerate(runs):  # add channels as the NYC grids report them
    run["test"]["per_channel"] = {c: _metrics(rng, 0.2) for c in ("inflow", "outflow")}
    (tmp_path / "sweep" / f"seed{k}" / "results.json").write_text(json.dumps(run))
  text = seeds.table([tmp_path / "sweep"], horizons=())
  header = [c.strip() for c in text.splitlines()[0].split("|")[1:-1]]
  i = header.index("MAE outflow")
  out = [r["test"]["per_channel"]["outflow"]["mae"] for r in runs]
  mean_row = [c.strip() for c in _row(text, "mean +- std (3)")]
  assert mean_row[i] == f"**{statistics.mean(out):.3f} +- {statistics.stdev(out):.3f}**"
  assert [c.strip() for c in _row(text, "historical average")][i] == "-"  # no channels reported
