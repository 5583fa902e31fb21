r"""The ST-LLM baseline on NYCTaxi (266 zones, 30-min pick-ups; `:drop` for drop-offs), ST-LLM protocol (12 -> 12).

Paper setting (pretrained GPT-2, a hub id or converted folder, and `python -m stjax.data download taxi-pick`):

  python -m stjax.train --config=configs/st_llm_nyctaxi.py --workdir=runs/st_llm_nyctaxi
  python -m stjax.train --config=configs/st_llm_nyctaxi.py:drop --workdir=runs/st_llm_nyctaxi_drop

`:cpu` (combinable with `:pick` or `:drop`, as `:cpu,drop`): a reduced random-init model on the
same data, compared with the naive baselines at the end:

  python -m stjax.train --config=configs/st_llm_nyctaxi.py:cpu --workdir=runs/st_llm_nyctaxi_cpu

Settings: stjax/recipes/st_llm.py, stjax/recipes/datasets.py. Published numbers: docs/results.md.
"""

from stjax.recipes import st_llm


def get_config(arg: str | None = None):
  return st_llm.config("taxi-pick", arg)
