"""`config.data`: its documented defaults and the options read from it.

`default_data_config` is the schema every config starts from (dataset name, paths, protocol,
lengths, loss, reader options, count clipping, missing-value filling, synthetic generator);
`reader_options` merges the registry's reader options with config.data.reader's set fields, and
`nonnegative_of` resolves config.data.nonnegative. Nothing here reads a file.
"""

from __future__ import annotations

import ml_collections

from stjax.data import registry
from stjax.data.missing import check_fill
from stjax.errors import UserError


def default_data_config() -> ml_collections.ConfigDict:
  """`config.data` with every field documented; configs start from this and override."""
  c = ml_collections.ConfigDict()
  c.name = "synthetic"  # "synthetic" or a registry name (`python -m stjax.data list`)
  c.path = ""  # series file/folder; "" = the registry's local copy of `name`
  c.graph_path = ""  # adjacency file; "" = the registry's graph (or none / synthetic's own)
  c.protocol = ""  # dcrnn | stllm | pems | sthsepnet | stssl (docs/protocols.md); "" = the
  # registry's protocol for `name` (dcrnn for synthetic)
  c.input_len = 0  # input steps; 0 = the protocol's (12, or 48 for sthsepnet)
  c.output_len = 0  # horizon; 0 = the protocol's (12, 48 for sthsepnet, 1 for stssl)
  c.loss = ""  # training loss: "" = the protocol's (masked_mae, or mse for sthsepnet);
  # "masked_mae" (original units) | "mse" (scaled units)
  c.reader = default_reader_config()  # how to read `path` (files without dates need step_minutes
  # and start); set fields override the registry's own options for `name`
  c.nonnegative = "auto"  # clip forecasts at 0: auto (= the registry says the values are counts) | yes | no
  c.fill_missing = "none"  # input readings of 0 (missing in DCRNN-style data): "none" (fed as 0) |
  # "last" (the node's last non-zero reading; targets keep their 0s, masked as before)
  s = c.synthetic = ml_collections.ConfigDict()
  s.num_nodes = 48  # sensors on a generated road-like kNN graph
  s.num_steps = 8064  # time steps (8064 x 5 min = 28 days)
  s.step_minutes = 5  # sampling interval in minutes
  s.seed = 0  # generator seed: same seed, same data
  s.missing_rate = 0.01  # fraction of readings dropped to 0 (missing), in short outages
  return c


def default_reader_config() -> ml_collections.ConfigDict:
  """`config.data.reader`: read_series options; each field's empty value means "not set"."""
  c = ml_collections.ConfigDict()
  c.step_minutes = 0.0  # minutes per step (files without dates); 0 = not set
  c.start = ""  # date and time of step 0, e.g. 2016-08-07T03:40 (files without dates); "" = not set
  c.channels = ()  # a name per channel of an .npz 'data' array, e.g. ("flow",); () = not set
  c.channel = ""  # the name of the single value channel of a CSV / .h5 / split folder; "" = not set
  c.tod_channel = ""  # .npz: "" = the channel named time_of_day if any; "none"; or its index, e.g. "2"
  c.node_ids_key = ""  # .npz: array of node ids in the file (e.g. sensor_ids): restricts a larger graph
  c.key = ""  # .h5: the frame's key in the store; "" = 'df' or the only frame
  return c


def _reader_fields(reader) -> dict:
  """The set fields of `config.data.reader` as read_series keyword arguments."""
  options = {k: v for k, v in dict(reader or {}).items() if v not in ("", 0, 0.0, (), None)}
  if "tod_channel" in options:
    value = str(options["tod_channel"]).strip().lower()
    if value != "none" and not value.isdigit():
      raise UserError(
        f"config.data.reader.tod_channel: {options['tod_channel']!r} is not '', 'none' or an index"
      )
    options["tod_channel"] = None if value == "none" else int(value)
  if "channels" in options:
    options["channels"] = tuple(options["channels"])
  return options


def reader_options(config: ml_collections.ConfigDict) -> dict:
  """The `read_series` options of config.data: the registry's for `name` (unless `path` is
  given), then `name`, then config.data.reader's. Nothing is read."""
  options = {"name": config.name, **_reader_fields(config.get("reader"))}
  if not config.path and config.name != "synthetic":
    options = {**registry.get(config.name).reader_options, **options}
  return options


def fill_rule_of(config: ml_collections.ConfigDict) -> str:
  """config.data.fill_missing, checked ("none" for run configs written before it existed)."""
  return check_fill(config.get("fill_missing", "none"))


def nonnegative_of(config: ml_collections.ConfigDict) -> bool:
  """config.data.nonnegative: "auto" = the registry's `counts` flag of `name` (False for synthetic
  data and unregistered names), "yes" | "no" = as given."""
  choice = str(config.get("nonnegative", "auto")).lower()
  if choice not in ("auto", "yes", "no"):
    raise UserError(f"config.data.nonnegative: {choice!r} is not auto, yes or no")
  if choice != "auto":
    return choice == "yes"
  return config.name in registry.DATASETS and registry.DATASETS[config.name].counts
