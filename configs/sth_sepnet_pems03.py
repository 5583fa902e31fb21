r"""STH-SepNet on PEMS03 (358 PeMS district 3 sensors, 5-min flow), STH-SepNet protocol (48 -> 48).

Paper setting, BERT-base as the paper's Table 1 (`python -m stjax.data download sthsepnet-pems03`; the
pretrained weights from the hub or a converted folder); `:gpt2` for its GPT-2 variant:

  python -m stjax.train --config=configs/sth_sepnet_pems03.py --workdir=runs/sth_sepnet_pems03
  python -m stjax.train --config=configs/sth_sepnet_pems03.py:gpt2 --workdir=runs/sth_sepnet_pems03_gpt2

`:cpu` (`:cpu,gpt2`): the reduced model of `sth_sepnet_metrla.py:cpu` on this dataset's full series;
its epochs are long, so on a CPU cap the run with `--config.train.max_steps`:

  python -m stjax.train --config=configs/sth_sepnet_pems03.py:cpu --workdir=runs/sth_sepnet_pems03_cpu

Settings: stjax/recipes/sth_sepnet.py, docs/sth_sepnet.md. Published numbers: docs/results.md.
"""

from stjax.recipes import sth_sepnet


def get_config(arg: str | None = None):
  return sth_sepnet.config("sthsepnet-pems03", arg)
