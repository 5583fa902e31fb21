r"""ST-LINK on PEMS-BAY (325 sensors, 5-min speed), DCRNN protocol (12 -> 12).

Paper setting (pretrained GPT-2, a hub id or converted folder, and `python -m stjax.data download pems-bay`):

  python -m stjax.train --config=configs/st_link_pemsbay.py --workdir=runs/st_link_pemsbay

`:cpu`: a reduced random-init model on the full PEMS-BAY series (download it first), compared with
the naive baselines at the end:

  python -m stjax.train --config=configs/st_link_pemsbay.py:cpu --workdir=runs/st_link_pemsbay_cpu

Settings: stjax/recipes/st_link.py, stjax/recipes/datasets.py. Published numbers: docs/results.md.
"""

from stjax.recipes import st_link


def get_config(arg: str | None = None):
  return st_link.config("pems-bay", arg)
