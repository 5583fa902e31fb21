r"""ST-LINK on Citi Bike (250 stations, 30-min pick-ups; `:drop` for drop-offs), ST-LLM protocol (12 -> 12).

Paper setting (pretrained GPT-2, a hub id or converted folder, and `python -m stjax.data download bike-pick`):

  python -m stjax.train --config=configs/st_link_citibike.py --workdir=runs/st_link_citibike
  python -m stjax.train --config=configs/st_link_citibike.py:drop --workdir=runs/st_link_citibike_drop

`:cpu` (combinable with `:pick` or `:drop`, as `:cpu,drop`): a reduced random-init model on the
same data, compared with the naive baselines at the end:

  python -m stjax.train --config=configs/st_link_citibike.py:cpu --workdir=runs/st_link_citibike_cpu

Settings: stjax/recipes/st_link.py, stjax/recipes/datasets.py. Published numbers: docs/results.md.
"""

from stjax.recipes import st_link


def get_config(arg: str | None = None):
  return st_link.config("bike-pick", arg)
