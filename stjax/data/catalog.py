"""The catalogue of datasets stjax knows: each one's size, step, protocol, reader options and files
(public URL, sha256 and size where recorded, path in the shared real-data folder where staged).
Lookup, local paths and loading are `stjax.data.registry`'s."""

from __future__ import annotations

import dataclasses

_GH = "https://raw.githubusercontent.com"
_DCRNN = f"{_GH}/liyaguang/DCRNN/602afd9d767d3aa1c9b3eac51710d6aeee12c227/data/sensor_graph"
_TGCN = f"{_GH}/lehaifeng/T-GCN/219a2346f5bf68d54d91a948e7a41a08f9edc46b/data"
_ASTGNN = f"{_GH}/guoshnBJTU/ASTGNN/9c2e19b98c4cedf1f35214d8789685b6381b3aad/data"
_SEPNET = f"{_GH}/jiawenchen10/ST-SepNet/e1b4a02ca10a4cc4a56c4ad4c105445f33db6e9a/dataset"
_PMDMNET = f"{_GH}/wengwenchao123/PM-DMNet/8e517f579781cb2223088d8df38e4fbbde8439dd/data"
_STSSL = f"{_GH}/Echo-Ji/ST-SSL/b3f3dfc48d12524c207cc89f4e242cb8aac081c0/data"
_MVFN = f"{_GH}/zhangdongran/MVFN/b6332b9a9d1043599eac3d78fe34b38a17211235/data"
_ZENODO_DCRNN = "https://zenodo.org/records/4263971/files"
_STLLM_NOTE = (
  "ST-LLM's preprocessed split (Google Drive link in https://github.com/ChenxiLiu-HNU/ST-LLM README)"
)
_SEPNET_NOTE = "STH-SepNet's series (Google Drive link in https://github.com/jiawenchen10/ST-SepNet README)"
_SUBSET_NOTE = "derived from public DCRNN-style splits; see docs/data_formats.md (real full-length series)"
_PEMS_NOTE = "ASTGCN/STSGCN flow arrays (links in https://github.com/guoshnBJTU/ASTGNN README)"


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  """One file of a dataset."""

  name: str  # local file name inside the dataset's folder
  url: str | None  # public direct link, or None when there is none
  sha256: str | None = None  # of the public file (checked against a byte-identical staged copy), or None
  size: int | None = None  # bytes, when known
  shared: str | None = None  # path of its verified copy under the real-data folder (shared_dir()), if any
  note: str = ""  # where to get it when url is None


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """A named dataset."""

  name: str
  description: str
  nodes: int
  steps: int | None  # series length T, None when not known from a public source
  step_minutes: float
  protocol: str  # stjax.data.protocols name
  series: str | None  # file name of the series among `files` (None: graph-only entry)
  graph: str | None  # file name of the graph among `files`
  files: tuple[RemoteFile, ...]
  reader_options: dict = dataclasses.field(default_factory=dict)  # passed to read_series
  graph_node_ids: str | None = None  # file among `files` giving the graph's node order (edge lists)
  counts: bool = False  # values are counts (demand, flow): forecasts are clipped at 0 by default

  def file(self, name: str) -> RemoteFile:
    return next(f for f in self.files if f.name == name)


def _metr_pkl():
  return RemoteFile(
    "adj_mx.pkl",
    f"{_DCRNN}/adj_mx.pkl",
    "a35687c6e15aa228dc45027b0ed2a0ea0f4ec78f573deb992c595092d12f61b3",
    680459,
    "METR-LA/adj_mx.pkl",
  )


def _stllm(name, nodes, graph_file, sha, size, what):
  splits = tuple(RemoteFile(f"{s}.npz", None, note=_STLLM_NOTE) for s in ("train", "val", "test"))
  return DatasetInfo(
    name,
    f"ST-LLM NYC {what}, 2016-04-01..06-30",
    nodes,
    4368,
    30,
    "stllm",
    "train.npz",
    graph_file,
    splits + (RemoteFile(graph_file, f"{_MVFN}/{graph_file}", sha, size, f"NYC_CCRNN_graphs/{graph_file}"),),
    {"channel": what.split()[-1]},
    counts=True,
  )


def _pems(num, nodes, steps, start, channels, graph_sha, graph_size, txt=None):
  name = f"PEMS0{num}"
  files = [
    RemoteFile(f"{name}.npz", None, note=_PEMS_NOTE),
    RemoteFile(
      f"{name}.csv", f"{_ASTGNN}/{name}/{name}.csv", graph_sha, graph_size, f"PEMS0X/{name}/{name}.csv"
    ),
  ]
  if txt:
    files.append(
      RemoteFile(f"{name}.txt", f"{_ASTGNN}/{name}/{name}.txt", txt[0], txt[1], f"PEMS0X/{name}/{name}.txt")
    )
  # No paper of ours uses PEMS04/07/08; sthsepnet (48 -> 48, per-node z-score) is their default.
  return DatasetInfo(
    f"pems0{num}",
    f"PeMS district {num} flow, from {start}",
    nodes,
    steps,
    5,
    "sthsepnet",
    f"{name}.npz",
    f"{name}.csv",
    tuple(files),
    {"step_minutes": 5, "start": start, "channels": channels, "tod_channel": None},
    f"{name}.txt" if txt else None,
    counts=True,
  )


def _sepnet(name, folder, series, nodes, steps, step, adj, sha, size, start_note, counts=False):
  return DatasetInfo(
    name,
    f"STH-SepNet {folder} ({start_note})",
    nodes,
    steps,
    step,
    "sthsepnet",
    series,
    adj,
    (
      RemoteFile(series, None, note=_SEPNET_NOTE),
      RemoteFile(adj, f"{_SEPNET}/{folder}/{adj}", sha, size, f"STH-SepNet_graphs/{folder}/{adj}"),
    ),
    counts=counts,
  )


ALL = [
  DatasetInfo(
    "metr-la",
    "DCRNN METR-LA loop-detector speed, Los Angeles, 2012-03-01..06-27",
    207,
    34272,
    5,
    "dcrnn",
    "metr-la.h5",
    "adj_mx.pkl",
    (RemoteFile("metr-la.h5", f"{_ZENODO_DCRNN}/metr-la.h5"), _metr_pkl()),
  ),
  DatasetInfo(
    "pems-bay",
    "DCRNN PEMS-BAY speed, Bay Area, 2017-01-01..06-30",
    325,
    52116,
    5,
    "dcrnn",
    "pems-bay.h5",
    "adj_mx_bay.pkl",
    (
      RemoteFile("pems-bay.h5", f"{_ZENODO_DCRNN}/pems-bay.h5"),
      RemoteFile(
        "adj_mx_bay.pkl",
        f"{_DCRNN}/adj_mx_bay.pkl",
        "116275f5704d0d492018e14c047f7ae5004385b450aa907f88424055a4a97370",
        1681480,
        "PEMS-BAY/adj_mx_bay.pkl",
      ),
      RemoteFile(
        "distances_bay_2017.csv",
        f"{_DCRNN}/distances_bay_2017.csv",
        "e5feed06bfa1ba4c554a946d0e03d99f2018365eec5a8f28fd8504dea9d082b5",
        175771,
        "PEMS-BAY/distances_bay_2017.csv",
      ),
    ),
  ),
  DatasetInfo(
    "metr-la-excerpt",
    "first 7 days of METR-LA as T-GCN ships it (zeros interpolated), for smoke tests",
    207,
    2016,
    5,
    "dcrnn",
    "los_speed.csv",
    "adj_mx.pkl",
    (
      RemoteFile(
        "los_speed.csv",
        f"{_TGCN}/los_speed.csv",
        "7b732d86ae32b2930595becba28aff39dacbfb2197e250fc0332e1744ce2cbf4",
        3402125,
        "METR-LA/tgcn_los_subset/los_speed.csv",
      ),
      _metr_pkl(),
    ),
    {"step_minutes": 5, "start": "2012-03-01T00:00", "channel": "speed"},
  ),
  DatasetInfo(
    "nycbike1",
    "ST-SSL NYCBike1 (STResNet) 16x8 grid in/outflow, hourly from 2014-04-01",
    128,
    4392,
    60,
    "stssl",
    "NYCBike1.npz",
    "adj_mx.npz",
    (
      RemoteFile(
        "NYCBike1.npz",
        f"{_PMDMNET}/NYCBike1/NYCBike1.npz",
        "1bbdd0c89c1ee91a85db4d87f7d1822ecc3256a89a3e55e64121155d8eef65b6",
        1287251,
        "NYC_ST-SSL/NYCBike1/NYCBike1.npz",
      ),
      RemoteFile(
        "adj_mx.npz",
        f"{_PMDMNET}/NYCBike1/adj_mx.npz",
        "21e7556c2a05cbd41312154fc82ca07539b51be3299a9c53f5d19f676ba487ec",
        631,
        "NYC_ST-SSL/NYCBike1/adj_mx.npz",
      ),
    ),
    {"step_minutes": 60, "start": "2014-04-01"},
    counts=True,
  ),
  DatasetInfo(
    "nycbike2",
    "ST-SSL NYCBike2 (STDN) 10x20 grid in/outflow, 30 min from 2016-07-01",
    200,
    2880,
    30,
    "stssl",
    "NYCBike2.npz",
    "adj_mx.npz",
    (
      RemoteFile(
        "NYCBike2.npz",
        f"{_PMDMNET}/NYCBike2/NYCBike2.npz",
        "08ec4fe7cca5bb641d1e9bf92fae022f1942bff42227c72d543ef2284dc896b0",
        722846,
        "NYC_ST-SSL/NYCBike2/NYCBike2.npz",
      ),
      RemoteFile(
        "adj_mx.npz",
        f"{_PMDMNET}/NYCBike2/adj_mx.npz",
        "c5e94cbe5a0c5c8e4db0daa958a6d7d12b966bcead77d1ec2e022d73b902be13",
        1472,
        "NYC_ST-SSL/NYCBike2/adj_mx.npz",
      ),
    ),
    {"step_minutes": 30, "start": "2016-07-01"},
    counts=True,
  ),
  DatasetInfo(
    "nyctaxi-grid",
    "ST-SSL NYCTaxi (STDN) 10x20 grid in/outflow, 30 min from 2015-01-01",
    200,
    2880,
    30,
    "stssl",
    "NYCTaxi.npz",
    "adj_mx.npz",
    (
      RemoteFile("NYCTaxi.npz", f"{_PMDMNET}/NYCTaxi/NYCTaxi.npz"),
      RemoteFile("adj_mx.npz", f"{_STSSL}/NYCTaxi/adj_mx.npz"),
    ),
    {"step_minutes": 30, "start": "2015-01-01"},
    counts=True,
  ),
  _stllm(
    "taxi-pick",
    266,
    "dis_tt.csv",
    "05f431e480dd3d54c917dee4b2c673c69499d522b6e28930df1d879e3467cef4",
    1768900,
    "taxi pick-ups",
  ),
  _stllm(
    "taxi-drop",
    266,
    "dis_tt.csv",
    "05f431e480dd3d54c917dee4b2c673c69499d522b6e28930df1d879e3467cef4",
    1768900,
    "taxi drop-offs",
  ),
  _stllm(
    "bike-pick",
    250,
    "dis_bb.csv",
    "23425e02e586e187db2fdd3b079696b1e0d64b3b7cf9bd93f8b6152c7cff6c15",
    1562500,
    "bike pick-ups",
  ),
  _stllm(
    "bike-drop",
    250,
    "dis_bb.csv",
    "23425e02e586e187db2fdd3b079696b1e0d64b3b7cf9bd93f8b6152c7cff6c15",
    1562500,
    "bike drop-offs",
  ),
  _sepnet(
    "sthsepnet-pems03",
    "PEMS03",
    "PEMS03.csv",
    358,
    26208,
    5,
    "PEMS03_adj.csv",
    "b6a79997d5c58e3c60b84084b90af95d720ab696e3a4473a002f1afd1636a759",
    516407,
    "5 min",
    counts=True,
  ),
  _sepnet(
    "sthsepnet-metr",
    "METR",
    "METR.csv",
    207,
    34272,
    5,
    "METR_adj.csv",
    "b70609e5d5e8d32fb285ce01e6eb2167b376f0bbcacaaccf04000809614ca9df",
    179753,
    "METR-LA, 5 min",
  ),
  _sepnet(
    "sthsepnet-bj500",
    "BJ",
    "BJ.csv",
    500,
    None,
    5,
    "BJ_adj.csv",
    "04c19c5d422c5666ae67cf1e06cbb65c5e4770df5fb426d24886ff102d7b361a",
    1729271,
    "Beijing, 5 min",
  ),
  _sepnet(
    "sthsepnet-bike-inflow",
    "Bike",
    "inflow.csv",
    295,
    8760,
    60,
    "adj.csv",
    "24263a657a5b738c8e0f75cbdb3d4ca79a7a01af9bfb2d21315b0e444d526982",
    358126,
    "NYC Citi Bike inflow, hourly 2023",
    counts=True,
  ),
  _sepnet(
    "sthsepnet-bike-outflow",
    "Bike",
    "outflow.csv",
    295,
    8760,
    60,
    "adj.csv",
    "24263a657a5b738c8e0f75cbdb3d4ca79a7a01af9bfb2d21315b0e444d526982",
    358126,
    "NYC Citi Bike outflow, hourly 2023",
    counts=True,
  ),
  _pems(
    3,
    358,
    26208,
    "2018-09-01",
    ("flow",),
    "b978bc1fee8172ac0bb02e6478f0376b68d172ee88c0c3121c60241e42c89fc6",
    11994,
    ("553bd79618c1e7eb195b467b5a3114d44c5adb43f7ab8b19789fd9dfaa43c439", 2862),
  ),
  _pems(
    4,
    307,
    16992,
    "2018-01-01",
    ("flow", "occupancy", "speed"),
    "68ffaa80447eb34428a9999dc28363c61406ec0fd714686d0582d2386ac6f5f7",
    4852,
  ),
  _pems(
    7,
    883,
    28224,
    "2017-05-01",
    ("flow",),
    "f7d127ebf976f1e2d93dc7d7275cef6d8c4c1828c7c8bfbaf3ee1254491314f1",
    15016,
  ),
  _pems(
    8,
    170,
    17856,
    "2016-07-01",
    ("flow", "occupancy", "speed"),
    "859d68e7583ed4e6016588eaaca494d3ece286dae361614c5c1833017f87eaa7",
    4032,
  ),
  # Real full-length series of some sensors / the last 40 % of the span, rebuilt exactly from public
  # DCRNN-style windowed splits (every window re-checked); derived files, so no URL (docs/data_formats.md).
  DatasetInfo(
    "metr-la-29",
    "METR-LA speed, all 34272 steps (5 min from 2012-03-01) of 29 of the 207 sensors; 0 = missing",
    29,
    34272,
    5,
    "dcrnn",
    "metr_la_29_sensors.npz",
    "adj_mx.pkl",
    (
      RemoteFile(
        "metr_la_29_sensors.npz",
        None,
        "a21047963c78dedb134470ded6be7fae34dac363b4cb08230a0303117b8e69e5",
        1489025,
        "real_subsets/metr_la_29_sensors.npz",
        note=_SUBSET_NOTE,
      ),
      _metr_pkl(),
    ),
    {"step_minutes": 5, "start": "2012-03-01T00:00", "channels": ("speed",), "node_ids_key": "sensor_ids"},
  ),
  DatasetInfo(
    "pems08-tail",
    "PEMS08 flow, the last 40 % (7156 steps, 5 min from 2016-08-07 03:40), all 170 detectors",
    170,
    7156,
    5,
    "pems",
    "pems08_last_40pct.npz",
    "PEMS08.csv",
    (
      RemoteFile(
        "pems08_last_40pct.npz",
        None,
        "d247d8c04493271fbbfa26685bec11ec304557842d96f6d771570cab5f1c0f64",
        1901378,
        "real_subsets/pems08_last_40pct.npz",
        note=_SUBSET_NOTE,
      ),
      RemoteFile(
        "PEMS08.csv",
        f"{_ASTGNN}/PEMS08/PEMS08.csv",
        "859d68e7583ed4e6016588eaaca494d3ece286dae361614c5c1833017f87eaa7",
        4032,
        "PEMS0X/PEMS08/PEMS08.csv",
      ),
    ),
    {"step_minutes": 5, "start": "2016-08-07T03:40", "channels": ("flow",)},
    counts=True,
  ),
  DatasetInfo(
    "bike-drop-tail",
    "NYC Citi Bike drop-offs (ST-LLM's 250 stations), the last 1762 half-hour steps from 2016-05-25 07:00",
    250,
    1762,
    30,
    "stllm",
    "nyc_bike_drop_last_40pct.npz",
    "nyc_bike_drop_last_40pct.npz",
    (
      RemoteFile(
        "nyc_bike_drop_last_40pct.npz",
        None,
        "9ec53b9dc6557aaca95b43a041c9716c82d6805bd959fd56d3f4c95dccabe568",
        375942,
        "real_subsets/nyc_bike_drop_last_40pct.npz",
        note=_SUBSET_NOTE,
      ),
    ),
    {"step_minutes": 30, "start": "2016-05-25T07:00", "channels": ("drop-offs",)},
    counts=True,
  ),
]
