r"""ST-LINK on NYCBike2 (10x20 grid, 30-min inflow and outflow), ST-SSL protocol.

Paper setting (pretrained GPT-2, a hub id or converted folder, and `python -m stjax.data download nycbike2`):

  python -m stjax.train --config=configs/st_link_nycbike2.py --workdir=runs/st_link_nycbike2

`:cpu`: a reduced random-init model on the same data, minutes on 2 CPU cores, compared with the naive
baselines at the end:

  python -m stjax.train --config=configs/st_link_nycbike2.py:cpu --workdir=runs/st_link_nycbike2_cpu

Settings: stjax/recipes/st_link.py, stjax/recipes/datasets.py. Measured and published numbers:
docs/results.md.
"""

from stjax.recipes import st_link


def get_config(arg: str | None = None):
  return st_link.config("nycbike2", arg)
