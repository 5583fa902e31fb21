r"""STH-SepNet on METR-LA (207 loop detectors, 5-min speed), STH-SepNet protocol (48 -> 48).

Paper setting, BERT-base as the paper's Table 1 (`python -m stjax.data download sthsepnet-metr`; the
pretrained weights from the hub or a converted folder); `:gpt2` for its GPT-2 variant:

  python -m stjax.train --config=configs/sth_sepnet_metrla.py --workdir=runs/sth_sepnet_metrla
  python -m stjax.train --config=configs/sth_sepnet_metrla.py:gpt2 --workdir=runs/sth_sepnet_metrla_gpt2

`:cpu`: a reduced model with a tiny random BERT (`:cpu,gpt2`: a tiny random GPT-2) on the 7-day
METR-LA excerpt of the registry (`python -m stjax.data download metr-la-excerpt`), 48 -> 48, compared
with the naive baselines at the end:

  python -m stjax.train --config=configs/sth_sepnet_metrla.py:cpu --workdir=runs/sth_sepnet_metrla_cpu

`:dcrnn` (with any of the above): 12 -> 12 under the DCRNN protocol, beside ST-LINK and ST-LLM; e.g.
on the full-length 29-sensor series:

  python -m stjax.train --config=configs/sth_sepnet_metrla.py:cpu,dcrnn --config.data.name=metr-la-29 \
      --workdir=runs/sth_sepnet_metrla29_cpu

Settings: stjax/recipes/sth_sepnet.py, docs/sth_sepnet.md. Measured and published numbers:
docs/results.md.
"""

from stjax.recipes import sth_sepnet


def get_config(arg: str | None = None):
  return sth_sepnet.config("sthsepnet-metr", arg)
