"""What a run knows about its data, stored beside config.json so that evaluating and forecasting
need neither the training data nor a refit of the scaler.

  DIR/run.json    {"format": "stjax.run", "version": 1, "dataset": {name, channels, step_minutes,
                  steps_per_day, num_nodes, node_ids, graph}, "protocol": {every Protocol field,
                  resolved}, "scaler": {rule, fitted_on}, "num_train_windows", "splits": {split:
                  {windows, first_step, last_step, first_time, last_time, sha256}}, "reader": {...}}
  DIR/scaler.npz  mean, std: [1 | N, C] float32 over ALL dataset channels, fitted on training data
                  only (the protocol's rule) or given by the user for an imported model
  DIR/graph.npz   adjacency [N, N] float32, only when the dataset has a graph

`splits[s].sha256` fingerprints the steps the windows of split s read (values, time of day, day
of week), so evaluation can tell whether a data file holds exactly the run's test windows (and
must then reproduce results.json). `reader` holds the reader options of the training file, so
inputs in the same format read the same way. Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import secrets
from typing import Any

import numpy as np

from stjax.data.dataset import Dataset
from stjax.data.protocols import Protocol
from stjax.data.windows import DataBundle, DataSpec, Scaler, spec_of
from stjax.errors import UserError

FORMAT, VERSION = "stjax.run", 1
RUN_FILE, SCALER_FILE, GRAPH_FILE = "run.json", "scaler.npz", "graph.npz"
FILES = (RUN_FILE, SCALER_FILE, GRAPH_FILE)
_HASH_CHUNK = 4096  # time steps hashed at a time (a view: a copy only for another dtype)


@dataclasses.dataclass(frozen=True)
class RunData:
  """The data facts of a run. Arrays live in scaler.npz / graph.npz, the rest in run.json."""

  name: str  # dataset name
  channels: tuple[str, ...]  # names of ALL dataset channels (the scaler covers each)
  step_minutes: float  # sampling interval
  num_nodes: int  # N
  node_ids: tuple[str, ...] | None  # one id per node (the order the model was trained in), or None
  protocol: Protocol  # resolved (offsets, split, scaler rule, null rule, averaging)
  scaler: Scaler  # fitted on training data only, all channels
  adjacency: np.ndarray | None  # [N, N] float32 graph, or None
  num_train_windows: int | None  # training windows (sizes the optimizer schedule); None if imported
  splits: dict[str, dict]  # split -> windows, first/last step and time, sha256 (see module doc)
  reader: dict  # read_series options of the training file
  fitted_on: str  # where the scaler came from, for people

  @property
  def steps_per_day(self) -> int:
    return int(round(24 * 60 / self.step_minutes))

  @property
  def spec(self) -> DataSpec:
    return spec_of(self.placeholder(), self.protocol)

  def placeholder(self) -> Dataset:
    """A Dataset with no readings but this run's nodes, channels, calendar step and graph."""
    n, c = self.num_nodes, len(self.channels)
    return Dataset(
      name=self.name,
      values=np.zeros((0, n, c), np.float32),
      channels=self.channels,
      step_minutes=self.step_minutes,
      time_of_day=np.zeros(0, np.float32),
      day_of_week=np.zeros(0, np.int32),
      node_ids=self.node_ids,
      adjacency=self.adjacency,
    )

  def bundle(self, splits: dict, dataset: Dataset | None = None) -> DataBundle:
    """A DataBundle with this run's protocol, scaler and spec over `splits` (sources by name)."""
    dataset = self.placeholder() if dataset is None else dataset
    return DataBundle(dataset, self.protocol, self.scaler, splits, spec_of(dataset, self.protocol))

  def to_json(self) -> dict[str, Any]:
    return {
      "format": FORMAT,
      "version": VERSION,
      "dataset": {
        "name": self.name,
        "channels": list(self.channels),
        "step_minutes": self.step_minutes,
        "steps_per_day": self.steps_per_day,
        "num_nodes": self.num_nodes,
        "node_ids": None if self.node_ids is None else list(self.node_ids),
        "graph": self.adjacency is not None,
      },
      "protocol": _plain(dataclasses.asdict(self.protocol)),
      "scaler": {"rule": self.protocol.scaler_rule, "fitted_on": self.fitted_on, "file": SCALER_FILE},
      "num_train_windows": self.num_train_windows,
      "splits": self.splits,
      "reader": _plain(self.reader),
    }

  def differences(self, other: "RunData") -> list[str]:
    """Names of the facts that differ from `other` (run.json fields, scaler, graph)."""
    a, b = self.to_json(), other.to_json()
    out = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    for name, x, y in (
      ("scaler.mean", self.scaler.mean, other.scaler.mean),
      ("scaler.std", self.scaler.std, other.scaler.std),
      ("graph", self.adjacency, other.adjacency),
    ):
      if (x is None) != (y is None) or (x is not None and not np.array_equal(x, y)):
        out.append(name)
    return out

  def save(self, folder: str | os.PathLike) -> None:
    """Writes run.json, scaler.npz and (with a graph) graph.npz into `folder`, each atomically."""
    folder = pathlib.Path(folder)
    atomic_write(folder / SCALER_FILE, lambda f: np.savez(f, mean=self.scaler.mean, std=self.scaler.std))
    if self.adjacency is not None:
      atomic_write(folder / GRAPH_FILE, lambda f: np.savez(f, adjacency=self.adjacency))
    else:
      (folder / GRAPH_FILE).unlink(missing_ok=True)
    text = json.dumps(self.to_json(), indent=2) + "\n"
    atomic_write(folder / RUN_FILE, lambda f: f.write(text.encode()))


def from_bundle(bundle: DataBundle, reader: dict, fitted_on: str) -> RunData:
  """The RunData of a bundle built from a whole dataset (its splits fingerprinted)."""
  ds, p = bundle.dataset, bundle.protocol
  splits = {k: split_info(ds, src.times, p) for k, src in bundle.splits.items()}
  return RunData(
    name=ds.name,
    channels=tuple(ds.channels),
    step_minutes=float(ds.step_minutes),
    num_nodes=ds.num_nodes,
    node_ids=None if ds.node_ids is None else tuple(str(i) for i in ds.node_ids),
    protocol=p,
    scaler=bundle.scaler,
    adjacency=None if ds.adjacency is None else np.asarray(ds.adjacency, np.float32),
    num_train_windows=len(bundle.splits["train"]) if "train" in bundle.splits else None,
    splits=splits,
    reader=dict(reader),
    fitted_on=fitted_on,
  )


def split_info(dataset: Dataset, times: np.ndarray, protocol: Protocol) -> dict:
  """Windows, first/last current step (and time, when known) and the sha256 of what they read."""
  times = np.asarray(times)
  stamp = (lambda t: str(dataset.timestamps[t])) if dataset.timestamps is not None else (lambda t: None)
  return {
    "windows": int(len(times)),
    "first_step": int(times[0]),
    "last_step": int(times[-1]),
    "first_time": stamp(int(times[0])),
    "last_time": stamp(int(times[-1])),
    "sha256": fingerprint(dataset, times, protocol),
  }


def fingerprint(dataset: Dataset, times: np.ndarray, protocol: Protocol) -> str:
  """sha256 of the steps that windows at current steps `times` read: values (float32), time of
  day (float32), day of week (int32) of steps [times[0] + first input offset, times[-1] + last
  output offset]. Equal for a whole series and a file holding just those steps."""
  lo = int(times[0]) + protocol.input_offsets[0]
  hi = int(times[-1]) + protocol.output_offsets[-1] + 1
  h = hashlib.sha256(f"{len(times)}:{protocol.input_offsets}:{protocol.output_offsets}".encode())
  for a in range(lo, hi, _HASH_CHUNK):
    b = min(a + _HASH_CHUNK, hi)
    for part, dtype in (
      (dataset.values, np.float32),
      (dataset.time_of_day, np.float32),
      (dataset.day_of_week, np.int32),
    ):
      h.update(memoryview(np.ascontiguousarray(part[a:b], dtype)))  # no copy when already contiguous
  return h.hexdigest()


def all_window_times(num_steps: int, protocol: Protocol, where: str) -> np.ndarray:
  """Current steps of every window that fits in a series of `num_steps` steps."""
  lo, hi = -protocol.input_offsets[0], protocol.output_offsets[-1]
  if num_steps < lo + hi + 1:
    raise UserError(
      f"{where}: {num_steps} steps, but one window spans {lo + hi + 1} ({protocol.input_len} inputs "
      f"from offset {-lo}, targets to +{hi})"
    )
  return np.arange(lo, num_steps - hi, dtype=np.int64)


def exists(folder: str | os.PathLike) -> bool:
  return (pathlib.Path(folder) / RUN_FILE).is_file()


def load(folder: str | os.PathLike) -> RunData:
  """The RunData stored in `folder`; UserError naming the file for anything missing or malformed."""
  folder = pathlib.Path(folder)
  path = folder / RUN_FILE
  try:
    meta = json.loads(path.read_text())
  except FileNotFoundError:
    raise UserError(f"{path}: not found (runs store their scaler and protocol there)") from None
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: unreadable ({e})") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
    raise UserError(f"{path}: not a {FORMAT} file of version {VERSION}")
  try:
    d, p = meta["dataset"], meta["protocol"]
    protocol = Protocol(**{k: json_tuples(v) for k, v in p.items()})
    scaler = Scaler(**_arrays(folder / SCALER_FILE, ("mean", "std")))
    adjacency = _arrays(folder / GRAPH_FILE, ("adjacency",))["adjacency"] if d["graph"] else None
    run = RunData(
      name=d["name"],
      channels=tuple(d["channels"]),
      step_minutes=float(d["step_minutes"]),
      num_nodes=int(d["num_nodes"]),
      node_ids=None if d["node_ids"] is None else tuple(d["node_ids"]),
      protocol=protocol,
      scaler=scaler,
      adjacency=adjacency,
      num_train_windows=meta["num_train_windows"],
      splits=meta["splits"],
      reader=json_tuples(meta["reader"]),
      fitted_on=meta["scaler"]["fitted_on"],
    )
  except (KeyError, TypeError) as e:
    raise UserError(f"{path}: missing or malformed field ({type(e).__name__}: {e})") from None
  _check(run, folder)
  return run


def _check(run: RunData, folder: pathlib.Path) -> None:
  n, c = run.num_nodes, len(run.channels)
  for name, a in (("mean", run.scaler.mean), ("std", run.scaler.std)):
    if a.ndim != 2 or a.shape[0] not in (1, n) or a.shape[1] != c:
      raise UserError(f"{folder / SCALER_FILE}: {name} has shape {a.shape}, expected [1 or {n}, {c}]")
    if not np.isfinite(a).all():
      raise UserError(f"{folder / SCALER_FILE}: {name} has NaN/inf values")
  if not (run.scaler.std > 0).all():
    raise UserError(f"{folder / SCALER_FILE}: std must be > 0")
  if run.adjacency is not None and run.adjacency.shape != (n, n):
    raise UserError(f"{folder / GRAPH_FILE}: adjacency has shape {run.adjacency.shape}, expected ({n}, {n})")
  if run.node_ids is not None and len(run.node_ids) != n:
    raise UserError(f"{folder / RUN_FILE}: {len(run.node_ids)} node ids for {n} nodes")


def _arrays(path: pathlib.Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
  from stjax.data.formats.npz import load_npz  # the formats package pulls in h5py

  arrays = load_npz(path, keys)
  return {k: np.asarray(v, np.float32) for k, v in arrays.items()}


def _plain(x):
  """Tuples -> lists, NumPy scalars -> Python, recursively (JSON)."""
  if isinstance(x, dict):
    return {str(k): _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  return x


def json_tuples(x):
  """JSON lists -> tuples, recursively (protocols, reader options and configs use tuples)."""
  if isinstance(x, dict):
    return {k: json_tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(json_tuples(v) for v in x)
  return x


def atomic_write(path: str | os.PathLike, write) -> None:
  """`write(binary file)` into a new temporary file beside `path` (permissions as the umask gives),
  then renames it to `path`: readers see the old file or the whole new one, never a part."""
  path = pathlib.Path(path)
  tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
  try:
    with open(tmp, "xb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
