"""The NYC grids and station sets: ST-SSL's NYCBike1 / NYCBike2 / NYCTaxi grids and ST-LLM's taxi and
bike pick-ups / drop-offs."""

from __future__ import annotations

from stjax.data.catalog import sources
from stjax.data.catalog.entries import DatasetInfo, RemoteFile


def _stllm(name, nodes, graph_file, sha, size, what):
  splits = tuple(RemoteFile(f"{s}.npz", None, note=sources.STLLM_NOTE) for s in ("train", "val", "test"))
  return DatasetInfo(
    name,
    f"ST-LLM NYC {what}, 2016-04-01..06-30",
    nodes,
    4368,
    30,
    "stllm",
    "train.npz",
    graph_file,
    splits
    + (RemoteFile(graph_file, f"{sources.MVFN}/{graph_file}", sha, size, f"NYC_CCRNN_graphs/{graph_file}"),),
    {"channel": what.split()[-1]},
    counts=True,
  )


GRIDS = [
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
        f"{sources.PMDMNET}/NYCBike1/NYCBike1.npz",
        "1bbdd0c89c1ee91a85db4d87f7d1822ecc3256a89a3e55e64121155d8eef65b6",
        1287251,
        "NYC_ST-SSL/NYCBike1/NYCBike1.npz",
      ),
      RemoteFile(
        "adj_mx.npz",
        f"{sources.PMDMNET}/NYCBike1/adj_mx.npz",
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
        f"{sources.PMDMNET}/NYCBike2/NYCBike2.npz",
        "08ec4fe7cca5bb641d1e9bf92fae022f1942bff42227c72d543ef2284dc896b0",
        722846,
        "NYC_ST-SSL/NYCBike2/NYCBike2.npz",
      ),
      RemoteFile(
        "adj_mx.npz",
        f"{sources.PMDMNET}/NYCBike2/adj_mx.npz",
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
      RemoteFile("NYCTaxi.npz", f"{sources.PMDMNET}/NYCTaxi/NYCTaxi.npz"),
      RemoteFile("adj_mx.npz", f"{sources.STSSL}/NYCTaxi/adj_mx.npz"),
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
]
