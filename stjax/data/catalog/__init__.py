"""The catalogue of datasets stjax knows: each one's size, step, protocol, reader options and files
(public URL, sha256 and size where recorded, path in the shared real-data folder where staged).
`ALL` is every entry, family by family; lookup, local paths and loading are `stjax.data.registry`'s."""

from __future__ import annotations

from stjax.data.catalog.entries import DatasetInfo, RemoteFile
from stjax.data.catalog.grids import GRIDS
from stjax.data.catalog.pems import PEMS
from stjax.data.catalog.real_subsets import REAL_SUBSETS
from stjax.data.catalog.sensors import SENSORS
from stjax.data.catalog.sepnet import SEPNET

ALL = [*SENSORS, *GRIDS, *SEPNET, *PEMS, *REAL_SUBSETS]

__all__ = ["ALL", "DatasetInfo", "RemoteFile"]
