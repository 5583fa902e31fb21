"""A dataset cut by a protocol: `DataBundle` and `bundle_from_dataset`.

`bundle_from_dataset` splits the windows chronologically (or takes given split times with a stored
scaler), checks the series is finite, fits the `Scaler` on training data only, scales the input
channels once (O(T N C), optionally filling missing inputs) and builds the three `WindowSource`s;
`spec_of` gives the model-facing `DataSpec` without reading values, `describe` one summary line.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from stjax.data.dataset import Dataset
from stjax.data.missing import check_fill, fill_last
from stjax.data.protocols import Protocol
from stjax.data.scaler import Scaler
from stjax.data.window_source import DataSpec, WindowSource
from stjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class DataBundle:
  """A dataset under a protocol: its fitted scaler, three splits and the model-facing spec."""

  dataset: Dataset
  protocol: Protocol
  scaler: Scaler  # fitted on all dataset channels ([1 | N, C])
  splits: dict[str, WindowSource]  # "train", "val", "test"
  spec: DataSpec
  nonnegative: bool = False  # forecasts are clipped at 0 (count data; config.data.nonnegative)

  @property
  def target_scaler(self) -> Scaler:
    """Scaler of the target channels: `target_scaler.inverse(pred)` gives original units."""
    return self.scaler.target(self.protocol.target_channels)


def _channels(sel: tuple[int, ...] | None, dataset: Dataset, field: str, protocol: str) -> list[int]:
  if sel is None:
    return list(range(dataset.num_channels))
  bad = [c for c in sel if not 0 <= c < dataset.num_channels]
  if bad:
    raise UserError(
      f"protocol {protocol}: {field} {sel} but dataset {dataset.name} has channels {dataset.channels}"
    )
  return list(sel)


def _check_finite(dataset: Dataset, weights: np.ndarray):
  finite = np.isfinite(dataset.values)
  if finite.all():
    return
  bad_t, bad_n, _ = np.nonzero(~finite)
  part = "training data" if np.any(weights[bad_t] > 0) else "series"
  raise UserError(
    f"dataset {dataset.name}: {len(bad_t)} NaN/inf values in the {part} (first at step "
    f"{bad_t[0]}, node {bad_n[0]}); fill or drop them first"
  )


def bundle_from_dataset(
  dataset: Dataset,
  protocol: Protocol,
  scaler: Scaler | None = None,
  times: dict[str, np.ndarray] | None = None,
  nonnegative: bool = False,
  fill_missing: str = "none",
) -> DataBundle:
  """Splits, fits the scaler on training data, scales inputs once and builds the sources.

  Args:
    dataset, protocol: the series and how it is cut.
    scaler: a scaler fitted earlier (a run's stored one): used as is, nothing is fitted.
    times: {split: current steps [S]} to use instead of the protocol's chronological split (a file
      that holds one split only); needs `scaler`, since there is no training split to fit on.
    nonnegative: forecasts are clipped at 0 (count data; `nonnegative_of(config.data)`).
    fill_missing: "none" | "last": input zeros take the last non-zero reading (stjax.data.missing);
      the targets keep their zeros.
  """
  if times is None:
    times = protocol.split_times(dataset.num_steps)
    weights = protocol.scaler_weights(dataset.num_steps, times)
  elif scaler is None:
    raise ValueError("bundle_from_dataset: explicit split times need a fitted scaler")
  else:
    weights = np.zeros(dataset.num_steps)
  _check_finite(dataset, weights)
  in_ch = _channels(protocol.input_channels, dataset, "input_channels", protocol.name)
  out_ch = _channels(protocol.target_channels, dataset, "target_channels", protocol.name)
  if scaler is None:
    scaler = Scaler.fit(dataset.values, weights, protocol.scaler_rule, in_ch, dataset.name)
  in_scaler = scaler.target(in_ch)
  raw = dataset.values[:, :, in_ch]
  if check_fill(fill_missing) == "last":
    raw = fill_last(raw, in_scaler.mean)
  x = in_scaler.transform(raw).astype(np.float32)
  if out_ch == list(range(dataset.num_channels)):
    y = dataset.values
  elif len(out_ch) == 1:
    y = dataset.values[:, :, out_ch[0] : out_ch[0] + 1]
  else:
    y = dataset.values[:, :, out_ch]
  splits = {
    k: WindowSource(
      k, x, y, dataset.time_of_day, dataset.day_of_week, t, protocol.input_offsets, protocol.output_offsets
    )
    for k, t in times.items()
  }
  return DataBundle(dataset, protocol, scaler, splits, spec_of(dataset, protocol), nonnegative)


def spec_of(dataset: Dataset, protocol: Protocol) -> DataSpec:
  """The model-facing shape of `dataset` cut by `protocol` (no values are read)."""
  in_ch = _channels(protocol.input_channels, dataset, "input_channels", protocol.name)
  out_ch = _channels(protocol.target_channels, dataset, "target_channels", protocol.name)
  return DataSpec(
    num_nodes=dataset.num_nodes,
    input_len=protocol.input_len,
    output_len=protocol.output_len,
    in_channels=len(in_ch),
    out_channels=len(out_ch),
    input_offsets=protocol.input_offsets,
    output_offsets=protocol.output_offsets,
    steps_per_day=dataset.steps_per_day,
    adjacency=dataset.adjacency,
    channel_names=tuple(dataset.channels[c] for c in out_ch),
  )


def describe(bundle: DataBundle) -> str:
  """One line: dataset, protocol, window counts."""
  s = bundle.splits
  return (
    f"{bundle.dataset.name} {tuple(bundle.dataset.values.shape)} under {bundle.protocol.name}: "
    f"{bundle.spec.input_len} -> {bundle.spec.output_len}, windows train/val/test "
    f"{len(s['train'])}/{len(s['val'])}/{len(s['test'])}"
  )
