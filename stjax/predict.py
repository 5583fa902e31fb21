r"""Forecasts from a trained run folder; needs no training data.

  python -m stjax.predict --workdir=RUN --input=recent.csv [--output=forecast.csv|.npz] [--every-step]
  python -m stjax.predict --workdir=RUN --windows=windows.npz --output=pred.npz

`--input`: recent readings in the dataset's own format (a CSV with a date column and one column
per node, a DCRNN .h5, an .npz series with `--start` for files without dates, an ST-LLM split
.npz); the forecast is issued at the last reading (`--every-step`: at every step with enough
history). Output: `prediction` [F, T_out, N, C_out] in original units with `issued_at` [F] and
`target_time` [F, T_out] (datetime64[s], when the input has dates), `issued_step`, `horizon`,
`node_ids`, `channels` (.npz), or one CSV row per forecast and horizon with a column per node.
`--windows`: cut windows `x` [B, T_in, N, C_in + 2] in original units (the model's input
channels, then the time-of-day fraction and the day of week: ST-LLM's x layout) -> `prediction`
[B, T_out, N, C_out]. No --output: CSV on stdout. Input that does not fit the run (node count,
too few steps, gaps, NaN) is one error line and exit status 2; nothing is written.

Python:

    from stjax.predict import Forecaster
    f = Forecaster.from_workdir("runs/quickstart")
    y = f.predict(history, timestamps=ts)     # history [T, N, C] original units -> [T_out, N, C_out]

`history` holds the last `f.history_len` steps (ending at the current step t) of ALL dataset
channels in original units; the protocol's input offsets pick the steps the model reads (the
last 12 for DCRNN/ST-LLM, four day-spaced groups for ST-SSL). Calendar features come from
`timestamps` (datetime64, one per history step) or from explicit `time_of_day` / `day_of_week`.
The model, protocol and scaler come from the run folder (config.json, run.json, scaler.npz).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import numpy as np

from stjax.data.data_config import fill_rule_of
from stjax.data.missing import fill_windows
from stjax.errors import UserError, cli_entry


class Forecaster:
  """A trained model with its scaler and protocol; `predict` maps history to forecasts."""

  def __init__(self, experiment, state, run=None):
    from stjax.train.step import make_predict_fn

    self.experiment, self.state, self.run = experiment, state, run
    self.protocol, self.spec = experiment.bundle.protocol, experiment.bundle.spec
    self._in_channels = (
      list(self.protocol.input_channels)
      if self.protocol.input_channels is not None
      else list(range(experiment.bundle.dataset.num_channels))
    )
    self._in_scaler = experiment.bundle.scaler.target(self._in_channels)
    self._fill = fill_rule_of(experiment.config.data)  # zeros in the inputs, as in training
    self._offsets = np.asarray(self.protocol.input_offsets) - min(self.protocol.input_offsets)
    t = experiment.config.train
    self.batch_size = int(t.eval_batch_size or t.batch_size)  # windows per forward (padded): one compile
    predict = make_predict_fn(
      experiment.model, experiment.bundle.target_scaler, t.compute_dtype, experiment.bundle.nonnegative
    )
    self._predict = jax.jit(predict)

  @classmethod
  def from_workdir(cls, workdir: str | pathlib.Path) -> "Forecaster":
    from stjax.train.run_folder import load_run

    loaded = load_run(workdir, need_data=False)
    return cls(loaded.experiment, loaded.state, loaded.run)

  @property
  def history_len(self) -> int:
    """Steps of history `predict` needs (span of the protocol's input offsets)."""
    return int(self._offsets[-1]) + 1

  @property
  def channel_names(self) -> tuple[str, ...]:
    return self.spec.channel_names

  def predict(
    self,
    history: np.ndarray,
    timestamps: np.ndarray | None = None,
    time_of_day: np.ndarray | None = None,
    day_of_week: np.ndarray | None = None,
  ) -> np.ndarray:
    """Forecasts in original units.

    Args:
      history: [T, N, C] or [B, T, N, C] float, the last T >= history_len steps (the last one is the
        current step) of all C dataset channels, original units.
      timestamps: [T] or [B, T] datetime64, one per history step; or else
      time_of_day: [T] / [B, T] fraction of the day in [0, 1), and day_of_week: ints 0 = Monday.
    Returns:
      [T_out, N, C_out] (or [B, T_out, N, C_out]) float32 forecasts at the protocol's output offsets.
    """
    from stjax.data.dataset import calendar_features

    history = np.asarray(history, np.float32)
    single = history.ndim == 3
    if single:
      history = history[None]
    if history.ndim != 4:
      raise UserError(f"predict: history must be [T, N, C] or [B, T, N, C], got shape {history.shape}")
    b, t, n, c = history.shape
    num_channels = self.experiment.bundle.dataset.num_channels
    if t < self.history_len or n != self.spec.num_nodes or c != num_channels:
      raise UserError(
        f"predict: history {history.shape[1:]} must be [>= {self.history_len}, "
        f"{self.spec.num_nodes}, {num_channels}] (steps, nodes, channels)"
      )
    if not np.isfinite(history).all():
      raise UserError("predict: history has NaN/inf values; fill them (0 marks a missing reading)")
    if timestamps is not None:
      ts = np.asarray(timestamps).reshape(-1)
      tod, dow = calendar_features(ts)
      tod, dow = tod.reshape(b, -1), dow.reshape(b, -1)
    elif time_of_day is not None and day_of_week is not None:
      tod = np.asarray(time_of_day, np.float32).reshape(b, -1)
      dow = np.asarray(day_of_week, np.int32).reshape(b, -1)
    else:
      raise UserError("predict: give timestamps, or both time_of_day and day_of_week")
    if tod.shape[1] != t:
      raise UserError(f"predict: {tod.shape[1]} calendar steps for {t} history steps")
    steps = t - self.history_len + self._offsets  # the steps the protocol reads
    pred = self.predict_windows(history[:, steps][..., self._in_channels], tod[:, steps], dow[:, steps])
    return pred[0] if single else pred

  def predict_windows(self, x: np.ndarray, time_of_day: np.ndarray, day_of_week: np.ndarray) -> np.ndarray:
    """Cut windows -> forecasts: x [B, T_in, N, C_in] input channels in original units, time_of_day
    [B, T_in] fractions, day_of_week [B, T_in] -> [B, T_out, N, C_out] float32 original units.
    Runs in padded batches of `batch_size` windows (one compilation). A run trained with
    `config.data.fill_missing = "last"` fills input zeros the same way, each window on its own."""
    x = self._in_scaler.transform(fill_windows(x, self._fill, self._in_scaler.mean)).astype(np.float32)
    tod, dow = np.asarray(time_of_day, np.float32), np.asarray(day_of_week, np.int32)
    out = []
    for lo in range(0, len(x), self.batch_size):
      rows = np.minimum(np.arange(lo, lo + self.batch_size), len(x) - 1)  # pad with the last window
      batch = {"x": x[rows], "tod": tod[rows], "dow": dow[rows]}
      with self.experiment.context():
        pred = np.asarray(jax.device_get(self._predict(self.state, batch)))
      out.append(pred[: min(self.batch_size, len(x) - lo)])
    return np.concatenate(out)


# ----------------------------------------------------------------------------------------------
# Command line


def _parse(argv):
  parser = argparse.ArgumentParser(prog="python -m stjax.predict", description=__doc__.splitlines()[0])
  parser.add_argument(
    "--workdir", required=True, help="run folder (stjax.train or stjax.convert import-st-llm)"
  )
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--input", help="recent readings in the dataset's format (.csv, .h5, .npz)")
  source.add_argument("--windows", help=".npz with x [B, T_in, N, C_in + 2] in original units")
  parser.add_argument("--output", help="forecasts file (.npz or .csv); default: CSV on stdout")
  parser.add_argument("--start", help="time of the first step of an --input file that stores no dates")
  parser.add_argument(
    "--every-step", action="store_true", help="forecast at every step of --input with enough history"
  )
  return parser.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
  args = _parse(argv)
  output = _check_output(args.output)
  from stjax.data import run_data, run_inputs

  # The input is read and checked against the stored run facts before the model is built.
  forecaster = None if run_data.exists(args.workdir) else Forecaster.from_workdir(args.workdir)
  run = run_data.load(args.workdir) if forecaster is None else forecaster.run
  if args.windows:
    windows = run_inputs.read_windows(args.windows, run)
  else:
    dataset = run_inputs.read_series_input(args.input, run, args.start)
    need = 1 - run.protocol.input_offsets[0]
    if dataset.num_steps < need:
      raise UserError(
        f"{args.input}: {dataset.num_steps} steps, but the model reads the last {need} "
        f"(protocol {run.protocol.name}); give at least {need} consecutive steps"
      )
  forecaster = forecaster or Forecaster.from_workdir(args.workdir)
  spec = forecaster.spec
  node_ids = list(run.node_ids) if run.node_ids is not None else [str(i) for i in range(spec.num_nodes)]
  out = {"horizon": np.asarray(spec.output_offsets, np.int64), "node_ids": np.asarray(node_ids, str)}
  out["channels"] = np.asarray(spec.channel_names, str)
  if args.windows:
    what = f"{len(windows['x'])} windows"
    out["prediction"] = _batched(forecaster, windows["x"], windows["tod"], windows["dow"], what)
  else:
    out.update(_forecast_series(forecaster, dataset, args.every_step))
  if output is None:
    sys.stdout.write(_csv(out))
  else:
    _write(output, out)
    f, h = out["prediction"].shape[:2]
    print(f"wrote {f} forecast(s) x {h} horizons x {spec.num_nodes} nodes to {output}")
  return 0


def _check_output(path: str | None) -> pathlib.Path | None:
  """The output path, checked before any work so a bad one wastes nothing."""
  if path is None:
    return None
  out = pathlib.Path(path).expanduser().absolute()
  if out.suffix.lower() not in (".npz", ".csv"):
    raise UserError(f"--output {path}: must end in .npz or .csv")
  if out.is_dir():
    raise UserError(f"--output {path}: is a folder")
  if not out.parent.is_dir():
    raise UserError(f"--output {path}: folder {out.parent} does not exist")
  return out


def _forecast_series(forecaster: Forecaster, dataset, every_step: bool) -> dict[str, np.ndarray]:
  """Forecasts issued at the last step (or every step with enough history) of a checked series."""
  need, t = forecaster.history_len, dataset.num_steps
  issued = np.arange(need - 1, t) if every_step else np.array([t - 1])
  reads = issued[:, None] + np.asarray(forecaster.protocol.input_offsets)[None]  # [F, T_in] steps read
  values = dataset.values[:, :, forecaster._in_channels]
  pred = _batched(
    forecaster,
    _Lazy(lambda r: values[reads[r]]),
    dataset.time_of_day[reads],
    dataset.day_of_week[reads],
    f"{len(issued)} forecasts",
  )
  out = {"prediction": pred, "issued_step": issued.astype(np.int64)}
  if dataset.timestamps is not None:
    step = np.timedelta64(int(round(dataset.step_minutes * 60)), "s")
    ts = dataset.timestamps.astype("datetime64[s]")
    out["issued_at"] = ts[issued]
    out["target_time"] = ts[issued][:, None] + step * np.asarray(forecaster.spec.output_offsets)[None]
  return out


class _Lazy:
  """Rows of x gathered on demand (every-step forecasts never hold all windows at once)."""

  def __init__(self, fn):
    self._fn = fn

  def __getitem__(self, rows):
    return self._fn(rows)


def _batched(forecaster: Forecaster, x, tod, dow, what: str) -> np.ndarray:
  """Forecasts of all windows in chunks, with a progress bar when there is more than one chunk."""
  from tqdm.auto import tqdm

  n, size = len(tod), forecaster.batch_size * 16
  chunks = range(0, n, size)
  bar = tqdm(chunks, desc=f"forecasting {what}", unit="chunk", disable=len(chunks) < 2, file=sys.stderr)
  return np.concatenate(
    [forecaster.predict_windows(x[lo : lo + size], tod[lo : lo + size], dow[lo : lo + size]) for lo in bar]
  )


def _columns(out: dict) -> list[str]:
  nodes, channels = list(out["node_ids"]), list(out["channels"])
  return nodes if len(channels) == 1 else [f"{n}:{c}" for n in nodes for c in channels]


def _csv(out: dict) -> str:
  """One row per forecast and horizon: when it was issued, for when, the horizon, a column per node."""
  pred = out["prediction"]
  f, h = pred.shape[:2]
  if "target_time" in out:
    head = ["issued_at", "date", "horizon"]
    keys = lambda i, j: [str(out["issued_at"][i]), str(out["target_time"][i, j])]
  elif "issued_step" in out:
    head = ["issued_step", "horizon"]
    keys = lambda i, j: [str(out["issued_step"][i])]
  else:
    head = ["window", "horizon"]
    keys = lambda i, j: [str(i)]
  lines = [",".join(head + _columns(out))]
  flat = pred.reshape(f, h, -1)
  for i in range(f):
    for j in range(h):
      row = keys(i, j) + [str(int(out["horizon"][j]))] + [format(float(v), ".9g") for v in flat[i, j]]
      lines.append(",".join(row))
  return "\n".join(lines) + "\n"


def _write(path: pathlib.Path, out: dict) -> None:
  """Writes `out` as .npz or .csv via a temporary file and a rename (nothing half-written)."""
  from stjax.data.run_data import atomic_write

  if path.suffix.lower() == ".npz":
    atomic_write(path, lambda f: np.savez(f, **out))
  else:
    atomic_write(path, lambda f: f.write(_csv(out).encode()))


if __name__ == "__main__":
  sys.exit(main())
