r"""ST-LINK on NYCBike1 (16x8 grid, hourly inflow and outflow), ST-SSL protocol.

Paper setting (pretrained GPT-2, a hub id or converted folder, and `python -m stjax.data download nycbike1`):

  python -m stjax.train --config=configs/st_link_nycbike1.py --workdir=runs/st_link_nycbike1

`:cpu`: a reduced random-init model on the same data, minutes on 2 CPU cores, compared with the naive
baselines at the end:

  python -m stjax.train --config=configs/st_link_nycbike1.py:cpu --workdir=runs/st_link_nycbike1_cpu

Settings: stjax/recipes/st_link.py, stjax/recipes/datasets.py. Measured and published numbers:
docs/results.md.
"""

from stjax.recipes import st_link


def get_config(arg: str | None = None):
  return st_link.config("nycbike1", arg)
