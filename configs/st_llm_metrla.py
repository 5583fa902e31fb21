r"""The ST-LLM baseline on METR-LA (207 loop detectors, 5-min speeds), DCRNN protocol (12 -> 12).

Not a dataset of the ST-LLM paper: the config puts ST-LLM beside ST-LINK and STH-SepNet on the
same speed series. Paper setting (pretrained GPT-2, a hub id or converted folder, and
`python -m stjax.data download metr-la`):

  python -m stjax.train --config=configs/st_llm_metrla.py --workdir=runs/st_llm_metrla

`:cpu`: a reduced random-init model on the METR-LA excerpt (or, as in docs/results.md, on the
full-length 29-sensor series with `--config.data.name=metr-la-29`), compared with the naive
baselines at the end:

  python -m stjax.train --config=configs/st_llm_metrla.py:cpu --config.data.name=metr-la-29 \
      --workdir=runs/st_llm_metrla29_cpu

Settings: stjax/recipes/st_llm.py, stjax/recipes/datasets.py. Measured numbers: docs/results.md.
"""

from stjax.recipes import st_llm


def get_config(arg: str | None = None):
  return st_llm.config("metr-la", arg)
