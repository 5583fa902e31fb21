r"""ST-LINK on METR-LA (207 loop detectors, 5-min speed), DCRNN protocol (12 -> 12).

Paper setting (pretrained GPT-2, a hub id or converted folder, and `python -m stjax.data download metr-la`):

  python -m stjax.train --config=configs/st_link_metrla.py --workdir=runs/st_link_metrla

`:cpu`: a reduced random-init model on the 7-day METR-LA excerpt of the registry
(`python -m stjax.data download metr-la-excerpt`), minutes on 2 CPU cores, compared with the naive
baselines at the end:

  python -m stjax.train --config=configs/st_link_metrla.py:cpu --workdir=runs/st_link_metrla_cpu

Settings: stjax/recipes/st_link.py, stjax/recipes/datasets.py. Measured and published numbers:
docs/results.md.
"""

from stjax.recipes import st_link


def get_config(arg: str | None = None):
  return st_link.config("metr-la", arg)
