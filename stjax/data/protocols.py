"""Evaluation protocols as data: window offsets, splits, scalers, null rules, reporting.

A `Protocol` says how a `Dataset` is cut into (input, target) windows, how the windows are split
chronologically into train / val / test, how the scaler is fitted, which target values count in the
metrics and the loss, and how the per-horizon metrics are averaged. The four named protocols
reproduce the published pipelines of DCRNN, ST-LLM, STH-SepNet and ST-SSL; docs/protocols.md states
every rule and where it comes from.

A window is identified by its "current" time step t: its inputs are the steps t + input_offsets
(all <= 0) and its targets the steps t + output_offsets (all >= 1). Offsets are in steps, so
non-contiguous windows (ST-SSL's daily history) need no special code.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stjax.errors import UserError

SPLIT_RULES = ("round_windows", "tslib_borders")
SCALER_RULES = ("global", "per_node", "global_train_val")
NULL_RULES = ("zero", "positive", "gt5", "none")
AVERAGE_RULES = ("horizon_mean", "pooled")
LOSSES = ("masked_mae", "mse")


def contiguous(first: int, last: int) -> tuple[int, ...]:
  """Offsets first..last inclusive."""
  return tuple(range(first, last + 1))


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How a dataset becomes windows, splits, scaled inputs and metrics.

  Attributes:
    name: protocol name.
    input_offsets: step offsets of the inputs relative to the current step t, increasing, last 0.
    output_offsets: step offsets of the targets, increasing, all >= 1.
    split_rule: "round_windows" (DCRNN: of the S windows, test = round(f_test S), train =
      round(f_train S), val = the rest, consecutive in time) or "tslib_borders" (Time-Series-Library:
      rows split at int(f_train T) and T - int(f_test T); a val/test window may read inputs from the
      rows before its part, its targets lie inside it).
    split_fractions: (train, val, test) fractions.
    scaler_rule: "global" (one mean/std per channel over the inputs of the training windows, each
      step counted as often as it appears, as DCRNN and ST-LLM compute over x_train), "per_node"
      (mean/std per node and channel over the training rows, sklearn StandardScaler per column) or
      "global_train_val" (ST-SSL: ONE scalar over all channels of the train AND val window inputs).
    null_rule: which targets count in metrics and masked loss: "zero" (true != 0; 0 = missing),
      "positive" (true > 0), "gt5" (true > 5), "none" (all).
    input_channels: dataset channel indices fed as `x`, or None for all.
    target_channels: dataset channel indices predicted as `y`, or None for all.
    report_horizons: horizons (output offsets) printed in tables besides the average.
    average: how the headline numbers are formed from the per-horizon sums: "horizon_mean" (mean of
      the per-horizon MAE/RMSE/MAPE/WAPE values) or "pooled" (one value over all horizons' entries).
    loss: "masked_mae" (in original units under null_rule) or "mse" (in scaled units, unmasked).
    offsets_by_steps_per_day: protocol-specific input offsets per sampling rate (ST-SSL uses one
      set for hourly data and another for 30-minute data); empty when input_offsets always apply.
  """

  name: str
  input_offsets: tuple[int, ...]
  output_offsets: tuple[int, ...]
  split_rule: str
  split_fractions: tuple[float, float, float]
  scaler_rule: str
  null_rule: str
  input_channels: tuple[int, ...] | None
  target_channels: tuple[int, ...] | None
  report_horizons: tuple[int, ...]
  average: str
  loss: str
  offsets_by_steps_per_day: tuple[tuple[int, tuple[int, ...]], ...] = ()

  def __post_init__(self):
    where = f"protocol {self.name}"
    for field, allowed in (
      ("split_rule", SPLIT_RULES),
      ("scaler_rule", SCALER_RULES),
      ("null_rule", NULL_RULES),
      ("average", AVERAGE_RULES),
      ("loss", LOSSES),
    ):
      if getattr(self, field) not in allowed:
        raise UserError(f"{where}: {field} must be one of {allowed}, got {getattr(self, field)!r}")
    _check_offsets(where, self.input_offsets, self.output_offsets)
    for _, offsets in self.offsets_by_steps_per_day:
      _check_offsets(where, offsets, self.output_offsets)
    fr = self.split_fractions
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1) > 1e-9:
      raise UserError(f"{where}: split_fractions must be three non-negative numbers summing to 1, got {fr}")

  @property
  def input_len(self) -> int:
    return len(self.input_offsets)

  @property
  def output_len(self) -> int:
    return len(self.output_offsets)

  @property
  def contiguous(self) -> bool:
    return self.input_offsets == contiguous(self.input_offsets[0], 0)

  def resolve(
    self, steps_per_day: int, input_len: int = 0, output_len: int = 0, loss: str = ""
  ) -> "Protocol":
    """The protocol for a dataset with `steps_per_day`, with optional length and loss overrides
    (0 / "" = keep).

    Contiguous protocols accept any lengths (inputs -(input_len-1)..0, outputs 1..output_len);
    protocols with fixed non-contiguous offsets (ST-SSL) refuse an input_len override.
    """
    p = self
    if self.offsets_by_steps_per_day:
      table = dict(self.offsets_by_steps_per_day)
      if steps_per_day not in table:
        rates = ", ".join(f"{24 * 60 // s}-minute" for s in table)
        raise UserError(
          f"protocol {self.name}: defined for {rates} data only, the dataset has "
          f"{steps_per_day} steps per day"
        )
      p = dataclasses.replace(p, input_offsets=table[steps_per_day], offsets_by_steps_per_day=())
    if input_len < 0 or output_len < 0:
      raise UserError(f"data.input_len / data.output_len must be >= 0, got {input_len} / {output_len}")
    if input_len:
      if not p.contiguous:
        raise UserError(
          f"data.input_len: protocol {self.name} has fixed non-contiguous input offsets "
          f"{p.input_offsets}; leave input_len at 0"
        )
      p = dataclasses.replace(p, input_offsets=contiguous(-(input_len - 1), 0))
    if output_len:
      kept = tuple(h for h in p.report_horizons if h <= output_len)
      if p.report_horizons and output_len not in kept:
        kept += (output_len,)  # always report the last horizon of a protocol that lists horizons
      p = dataclasses.replace(p, output_offsets=contiguous(1, output_len), report_horizons=kept)
    if loss:
      if loss not in LOSSES:
        raise UserError(
          f"data.loss must be one of {LOSSES} (or \"\" for the protocol's {self.loss!r}), got {loss!r}"
        )
      p = dataclasses.replace(p, loss=loss)
    return p

  def split_times(self, num_steps: int) -> dict[str, np.ndarray]:
    """Current times t of the windows of each split: {"train","val","test"} -> int64 [S_split]."""
    lo, hi = -self.input_offsets[0], self.output_offsets[-1]
    span = lo + hi + 1
    if span > num_steps:
      raise UserError(
        f"protocol {self.name}: a window spans {span} steps ({self.input_len} inputs from "
        f"offset {-lo}, targets to +{hi}) but the series has only {num_steps}"
      )
    f_train, _, f_test = self.split_fractions
    if self.split_rule == "round_windows":
      times = np.arange(lo, num_steps - hi, dtype=np.int64)
      s = len(times)
      n_test, n_train = round(s * f_test), round(s * f_train)
      parts = {"train": times[:n_train], "val": times[n_train : s - n_test], "test": times[s - n_test :]}
    else:
      n_train, n_test = int(num_steps * f_train), int(num_steps * f_test)
      bounds = {
        "train": (0, n_train),
        "val": (n_train, num_steps - n_test),
        "test": (num_steps - n_test, num_steps),
      }
      # Targets inside [start, end); inputs may reach back before start (TSLib: border1 = start - seq_len).
      parts = {k: np.arange(max(a - 1, lo), b - hi, dtype=np.int64) for k, (a, b) in bounds.items()}
      parts["train"] = np.arange(lo, n_train - hi, dtype=np.int64)
    for k, t in parts.items():
      if len(t) == 0:
        raise UserError(
          f"protocol {self.name}: the {k} split has no windows ({num_steps} steps, window "
          f"span {span}); use a longer series or shorter windows"
        )
    return parts

  def scaler_weights(self, num_steps: int, times: dict[str, np.ndarray]) -> np.ndarray:
    """How often each step counts when fitting the scaler: float64 [num_steps] (0 = unused).

    "per_node" under tslib_borders fits on the training rows once each (sklearn on data[:num_train]);
    otherwise each step counts as often as it is an input of a fitting window, which reproduces the
    statistics the published code computes over its materialised x_train (and x_val for ST-SSL).
    """
    if self.split_rule == "tslib_borders" and self.scaler_rule == "per_node":
      w = np.zeros(num_steps)
      w[: int(num_steps * self.split_fractions[0])] = 1.0
      return w
    fit = [times["train"]] + ([times["val"]] if self.scaler_rule == "global_train_val" else [])
    t = np.concatenate(fit)
    steps = (t[:, None] + np.asarray(self.input_offsets)[None, :]).ravel()
    return np.bincount(steps, minlength=num_steps).astype(np.float64)


def _check_offsets(where: str, inputs: tuple[int, ...], outputs: tuple[int, ...]):
  if not inputs or not outputs:
    raise UserError(f"{where}: input and output offsets must be non-empty")
  if inputs[-1] != 0 or any(b <= a for a, b in zip(inputs, inputs[1:])):
    raise UserError(f"{where}: input offsets must increase strictly and end at 0, got {inputs}")
  if outputs[0] < 1 or any(b <= a for a, b in zip(outputs, outputs[1:])):
    raise UserError(f"{where}: output offsets must increase strictly from >= 1, got {outputs}")


# ST-SSL history: the last few steps plus the same time on each of the previous three days.
STSSL_OFFSETS_HOURLY = contiguous(-73, -69) + contiguous(-49, -45) + contiguous(-25, -21) + contiguous(-3, 0)
STSSL_OFFSETS_30MIN = contiguous(-147, -139) + contiguous(-99, -91) + contiguous(-51, -43) + contiguous(-7, 0)

PROTOCOLS: dict[str, Protocol] = {
  "dcrnn": Protocol(
    name="dcrnn",
    input_offsets=contiguous(-11, 0),
    output_offsets=contiguous(1, 12),
    split_rule="round_windows",
    split_fractions=(0.7, 0.1, 0.2),
    scaler_rule="global",
    null_rule="zero",
    input_channels=(0,),
    target_channels=(0,),
    report_horizons=(3, 6, 12),
    average="horizon_mean",
    loss="masked_mae",
  ),
  "stllm": Protocol(
    name="stllm",
    input_offsets=contiguous(-11, 0),
    output_offsets=contiguous(1, 12),
    split_rule="round_windows",
    split_fractions=(0.6, 0.2, 0.2),
    scaler_rule="global",
    null_rule="positive",
    input_channels=(0,),
    target_channels=(0,),
    report_horizons=tuple(range(1, 13)),
    average="horizon_mean",
    loss="masked_mae",
  ),
  "sthsepnet": Protocol(
    name="sthsepnet",
    input_offsets=contiguous(-47, 0),
    output_offsets=contiguous(1, 48),
    split_rule="tslib_borders",
    split_fractions=(0.7, 0.1, 0.2),
    scaler_rule="per_node",
    null_rule="none",
    input_channels=None,
    target_channels=None,
    report_horizons=(),
    average="pooled",
    loss="mse",
  ),
  "stssl": Protocol(
    name="stssl",
    input_offsets=STSSL_OFFSETS_HOURLY,
    output_offsets=(1,),
    split_rule="round_windows",
    split_fractions=(0.7, 0.1, 0.2),
    scaler_rule="global_train_val",
    null_rule="gt5",
    input_channels=None,
    target_channels=None,
    report_horizons=(1,),
    average="pooled",
    loss="masked_mae",
    offsets_by_steps_per_day=((24, STSSL_OFFSETS_HOURLY), (48, STSSL_OFFSETS_30MIN)),
  ),
}
# PEMS0X flow benchmarks (STSGCN / ASTGCN convention): DCRNN's windows and metrics, split 6:2:2.
PROTOCOLS["pems"] = dataclasses.replace(PROTOCOLS["dcrnn"], name="pems", split_fractions=(0.6, 0.2, 0.2))


def get_protocol(name: str) -> Protocol:
  """The named protocol; UserError listing the known ones otherwise."""
  if name not in PROTOCOLS:
    raise UserError(f"data.protocol: unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
  return PROTOCOLS[name]
