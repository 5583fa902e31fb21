"""Masked forecasting metrics, streamed over batches, and the masked losses.

Every batch contributes SUMS per horizon and target channel (absolute error, squared error,
absolute percentage error, absolute truth, counts); `Metrics.compute()` divides at the end, so the
result does not depend on how the data was batched. Which targets count is the protocol's null rule:

  zero      true != 0   (DCRNN: 0 = missing reading)
  positive  true > 0    (ST-LLM)
  gt5       true > 5    (ST-SSL, applied per channel)
  none      all targets (STH-SepNet)

plus the batch's `valid` mask (padding rows of the last eval batch). MAPE and WAPE are reported in
PERCENT. MAPE skips targets equal to 0 (undefined there; only possible under "none").
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stjax.errors import UserError
from stjax.tables import markdown_table, metric_value

NULL_RULES = ("zero", "positive", "gt5", "none")
SUM_KEYS = ("abs_err", "sq_err", "abs_pct_err", "abs_true", "count", "pct_count")


def null_mask(true: jax.Array, null_rule: str) -> jax.Array:
  """Which targets count: bool, same shape as `true`."""
  if null_rule == "zero":
    return true != 0
  if null_rule == "positive":
    return true > 0
  if null_rule == "gt5":
    return true > 5
  if null_rule == "none":
    return jnp.ones(true.shape, bool)
  raise UserError(f"null rule must be one of {NULL_RULES}, got {null_rule!r}")


def _mask(true: jax.Array, null_rule: str, valid: jax.Array | None) -> jax.Array:
  mask = null_mask(true, null_rule)
  if valid is not None:
    mask = mask & jnp.reshape(valid, valid.shape + (1,) * (true.ndim - valid.ndim))
  return mask


def masked_mae(pred: jax.Array, true: jax.Array, null_rule: str, valid: jax.Array | None = None) -> jax.Array:
  """Mean |pred - true| over the targets the null rule keeps (0 when none are kept).

  pred, true: [B, T_out, N, C] in the same (original) units; valid: [B] bool or None.
  """
  mask = _mask(true, null_rule, valid)
  err = jnp.where(mask, jnp.abs(pred - true), 0.0)
  return err.sum() / jnp.maximum(mask.sum(), 1)


def mse(pred: jax.Array, true: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """Mean squared error over valid rows (STH-SepNet's loss, in scaled units)."""
  mask = _mask(true, "none", valid)
  return jnp.where(mask, (pred - true) ** 2, 0.0).sum() / jnp.maximum(mask.sum(), 1)


@functools.partial(jax.jit, static_argnames="null_rule")
def metric_sums(
  pred: jax.Array, true: jax.Array, valid: jax.Array | None = None, *, null_rule: str
) -> dict[str, jax.Array]:
  """Per-horizon, per-channel sums of one batch: each value [T_out, C] float32.

  pred, true: [B, T_out, N, C] original units; valid: [B] bool (None = all rows).
  """
  mask = _mask(true, null_rule, valid)
  err = jnp.abs(pred - true)
  pct_mask = mask & (true != 0)
  safe_true = jnp.where(pct_mask, true, 1.0)
  axes = (0, 2)  # batch and nodes
  return {
    "abs_err": jnp.where(mask, err, 0.0).sum(axes),
    "sq_err": jnp.where(mask, err * err, 0.0).sum(axes),
    "abs_pct_err": jnp.where(pct_mask, err / jnp.abs(safe_true), 0.0).sum(axes),
    "abs_true": jnp.where(mask, jnp.abs(true), 0.0).sum(axes),
    "count": mask.sum(axes).astype(jnp.float32),
    "pct_count": pct_mask.sum(axes).astype(jnp.float32),
  }


def _ratios(s: dict[str, np.ndarray]) -> dict[str, float]:
  """Metrics from (already reduced) float64 sums."""
  with np.errstate(invalid="ignore", divide="ignore"):
    return {
      "mae": float(s["abs_err"] / s["count"]) if s["count"] else float("nan"),
      "rmse": float(np.sqrt(s["sq_err"] / s["count"])) if s["count"] else float("nan"),
      "mape": float(100 * s["abs_pct_err"] / s["pct_count"]) if s["pct_count"] else float("nan"),
      "wape": float(100 * s["abs_err"] / s["abs_true"]) if s["abs_true"] else float("nan"),
    }


class Metrics:
  """Streaming masked MAE / RMSE / MAPE % / WAPE % per horizon and channel.

  Args:
    null_rule: "zero" | "positive" | "gt5" | "none".
    horizons: the output offsets (e.g. 1..12), one per T_out position.
    channel_names: one per target channel.
    average: "horizon_mean" (headline = mean of the per-horizon values; ST-LLM, DCRNN/Graph
      WaveNet tables) or "pooled" (headline over all entries at once).
  """

  def __init__(
    self, null_rule: str, horizons: Sequence[int], channel_names: Sequence[str], average: str = "horizon_mean"
  ):
    if null_rule not in NULL_RULES:
      raise UserError(f"null rule must be one of {NULL_RULES}, got {null_rule!r}")
    if average not in ("horizon_mean", "pooled"):
      raise UserError(f"average must be 'horizon_mean' or 'pooled', got {average!r}")
    self.null_rule = null_rule
    self.horizons = tuple(int(h) for h in horizons)
    self.channel_names = tuple(channel_names)
    self.average = average
    self.sums = {k: np.zeros((len(self.horizons), len(self.channel_names))) for k in SUM_KEYS}

  @classmethod
  def for_protocol(cls, protocol, spec) -> "Metrics":
    """Metrics configured by a `Protocol` and a `DataSpec`."""
    return cls(protocol.null_rule, spec.output_offsets, spec.channel_names, protocol.average)

  def update(self, pred, true, valid=None) -> None:
    """Adds one batch. pred, true: [B, T_out, N, C] original units; valid: [B] bool or None."""
    if tuple(np.shape(pred)) != tuple(np.shape(true)):
      raise ValueError(f"pred {np.shape(pred)} and true {np.shape(true)} differ")
    self.add(metric_sums(pred, true, valid, null_rule=self.null_rule))

  def add(self, sums: dict[str, jax.Array]) -> None:
    """Adds sums from `metric_sums` (e.g. computed inside a jitted eval step)."""
    for k in SUM_KEYS:
      self.sums[k] += np.asarray(sums[k], np.float64)

  def _summary(self, sums: dict[str, np.ndarray]) -> dict:
    """sums: each [H, C'] -> headline + per-horizon metrics pooled over the C' channels."""
    per_h = [
      {"horizon": h, **_ratios({k: v[i].sum() for k, v in sums.items()})} for i, h in enumerate(self.horizons)
    ]
    if self.average == "horizon_mean":
      head = {m: float(np.mean([r[m] for r in per_h])) for m in ("mae", "rmse", "mape", "wape")}
    else:
      head = _ratios({k: v.sum() for k, v in sums.items()})
    return {**head, "per_horizon": per_h}

  def compute(self) -> dict:
    """{"mae","rmse","mape","wape","per_horizon": [{horizon, mae, rmse, mape, wape}],
    "per_channel": {name: {... same ...}} (only with several target channels)}."""
    out = self._summary(self.sums)
    if len(self.channel_names) > 1:
      out["per_channel"] = {
        name: self._summary({k: v[:, c : c + 1] for k, v in self.sums.items()})
        for c, name in enumerate(self.channel_names)
      }
    return out


def format_table(results: dict, horizons: Sequence[int] | None = None, title: str = "") -> str:
  """A markdown table: one row per reported horizon and the average, per channel when several.

  horizons: which horizons to list (None or empty = all in `results`).
  """
  groups = list(results["per_channel"].items()) if "per_channel" in results else [("", results)]
  rows = []
  for name, r in groups:
    picked = [(str(h["horizon"]), h) for h in r["per_horizon"] if not horizons or h["horizon"] in horizons]
    if len(r["per_horizon"]) > 1:
      picked.append(("average", r))
    rows += [{"channel": name, "horizon": label, **{k: m[k] for k in _METRICS}} for label, m in picked]
  columns = ([("channel", "channel")] if groups[0][0] else []) + [("horizon", "horizon")]
  columns += [("mae", "MAE"), ("rmse", "RMSE"), ("mape", "MAPE %"), ("wape", "WAPE %")]
  table = markdown_table(rows, columns, metric_value)
  return f"{title}\n\n{table}" if title else table


_METRICS = ("mae", "rmse", "mape", "wape")
