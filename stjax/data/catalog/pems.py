"""The ASTGCN/STSGCN PeMS district flow sets: PEMS03, PEMS04, PEMS07, PEMS08."""

from __future__ import annotations

from stjax.data.catalog import sources
from stjax.data.catalog.entries import DatasetInfo, RemoteFile


def _pems(num, nodes, steps, start, channels, graph_sha, graph_size, txt=None):
  name = f"PEMS0{num}"
  files = [
    RemoteFile(f"{name}.npz", None, note=sources.PEMS_NOTE),
    RemoteFile(
      f"{name}.csv", f"{sources.ASTGNN}/{name}/{name}.csv", graph_sha, graph_size, f"PEMS0X/{name}/{name}.csv"
    ),
  ]
  if txt:
    files.append(
      RemoteFile(
        f"{name}.txt", f"{sources.ASTGNN}/{name}/{name}.txt", txt[0], txt[1], f"PEMS0X/{name}/{name}.txt"
      )
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


PEMS = [
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
]
