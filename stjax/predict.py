"""Forecasts from a trained run: load a workdir, give recent history, get predictions.

    from stjax.predict import Forecaster
    f = Forecaster.from_workdir("runs/quickstart")
    y = f.predict(history, timestamps=ts)     # history [T, N, C] original units -> [T_out, N, C_out]

`history` holds the last `f.history_len` steps (ending at the current step t) of ALL dataset
channels in original units; the protocol's input offsets pick the steps the model reads (the
last 12 for DCRNN/ST-LLM, four day-spaced groups for ST-SSL). Calendar features come from
`timestamps` (datetime64, one per history step) or from explicit `time_of_day` / `day_of_week`.
The model, scaler and shapes are rebuilt from DIR/config.json (the scaler is refitted on the
run's training data, identically), and the best checkpoint is loaded.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np

from stjax.errors import UserError


class Forecaster:
  """A trained model with its scaler and protocol; `predict` maps history to forecasts."""

  def __init__(self, experiment, state):
    from stjax.train.step import make_predict_fn

    self.experiment, self.state = experiment, state
    self.protocol, self.spec = experiment.bundle.protocol, experiment.bundle.spec
    self._in_channels = (
      list(self.protocol.input_channels)
      if self.protocol.input_channels is not None
      else list(range(experiment.bundle.dataset.num_channels))
    )
    self._in_scaler = experiment.bundle.scaler.target(self._in_channels)
    self._offsets = np.asarray(self.protocol.input_offsets) - min(self.protocol.input_offsets)
    predict = make_predict_fn(
      experiment.model,
      experiment.bundle.target_scaler,
      experiment.config.train.compute_dtype,
      experiment.bundle.nonnegative,
    )
    self._predict = jax.jit(predict)

  @classmethod
  def from_workdir(cls, workdir: str | pathlib.Path) -> "Forecaster":
    from stjax.train import checkpoint
    from stjax.train.experiment import build_experiment

    config = checkpoint.load_run_config(workdir)
    exp = build_experiment(config)
    ckpts = checkpoint.Checkpoints(workdir, keep=config.train.keep_checkpoints, read_only=True)
    state, _ = ckpts.restore_best(exp.abstract_state)
    return cls(exp, state)

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
    x = self._in_scaler.transform(history[:, steps][..., self._in_channels]).astype(np.float32)
    batch = {"x": x, "tod": tod[:, steps].astype(np.float32), "dow": dow[:, steps].astype(np.int32)}
    with self.experiment.context():
      pred = np.asarray(jax.device_get(self._predict(self.state, batch)))
    return pred[0] if single else pred
