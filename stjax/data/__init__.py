"""Data: the `Dataset` type, protocols, lazy windows, grain pipelines and synthetic data.

Typical use::

  bundle = build_data(config.data)              # Dataset + Protocol + Scaler + splits + DataSpec
  it = train_batches(bundle.splits["train"], global_batch_size=64, seed=0, num_epochs=10)
"""

from stjax.data.dataset import Dataset, calendar_features, regular_calendar
from stjax.data.protocols import PROTOCOLS, Protocol, get_protocol
from stjax.data.windows import (
  DataBundle,
  DataSpec,
  Scaler,
  WindowSource,
  build_data,
  bundle_from_dataset,
  default_data_config,
)

__all__ = [
  "Dataset",
  "calendar_features",
  "regular_calendar",
  "Protocol",
  "PROTOCOLS",
  "get_protocol",
  "Scaler",
  "WindowSource",
  "DataBundle",
  "DataSpec",
  "build_data",
  "bundle_from_dataset",
  "default_data_config",
  "train_batches",
  "eval_batches",
  "steps_per_epoch",
]


_PIPELINE = ("train_batches", "eval_batches", "steps_per_epoch")


def __getattr__(name: str):
  """The grain pipeline is imported on first use (grain costs ~1.5 s at start-up)."""
  if name in _PIPELINE:
    from stjax.data import pipeline

    return getattr(pipeline, name)
  raise AttributeError(f"module 'stjax.data' has no attribute {name!r}")
