r"""STH-SepNet on BJ500 (500 Beijing road segments, 5-min), STH-SepNet protocol (48 -> 48).

Command (paper setting; needs pretrained GPT-2 - a hub id or converted folder - and the
STH-SepNet series, `python -m stjax.data download sthsepnet-bj500`):

  python -m stjax.train --config=configs/sth_sepnet_bj500.py --workdir=runs/sth_sepnet_bj500

Expected (paper setting): near STH-SepNet (GPT-2)'s MAE 5.88 / RMSE 9.69 (unmasked, mean of 48
steps; ANCHORS.md, paper Table C.1). Paper hyperparameters (docs/sth_sepnet.md "Recommended
configs", ../shared/PUBLISHED_CODE.md 3.5): 48 -> 48, split 7:1:2 of rows, per-node z-score, MSE in
scaled units, Adam lr 3e-4, batch 32, 30 epochs, MultiStep lr x0.3 after epochs 5/20/40/70, early
stopping (patience 10 validations; stjax selects on validation MAE, the released code on MSE).

CPU variant (`:cpu`): the same reduced random-init model as `sth_sepnet_metrla.py:cpu` (48 -> 48) on
this dataset's full series (not available offline: download it first). Not run here; with 500 nodes
and the full series an epoch is far longer than the METR-LA excerpt's, so on 2 CPU cores cap it
with `--config.train.max_steps=...`:

  python -m stjax.train --config=configs/sth_sepnet_bj500.py:cpu --workdir=runs/sth_sepnet_bj500_cpu
"""

from stjax import presets
from stjax.models import sth_sepnet
from stjax.train.config import base_config, parse_variant


def get_config(arg: str | None = None):
  variant = parse_variant(arg, ("cpu",))
  c = base_config(sth_sepnet.default_config())
  c.data.name = (
    "sthsepnet-bj500"  # registry name (python -m stjax.data list); --config.data.path for another file.
  )
  c.data.protocol = (
    "sthsepnet"  # 48 -> 48, TSLib 7:1:2 rows, per-node z-score, unmasked metrics (docs/protocols.md).
  )
  presets.sth_sepnet_paper(
    c
  )  # the released METR/PEMS/BJ GPT-2 scripts (d_ff 128, lr 3e-4, batch 32, 30 epochs).
  if "cpu" in variant:  # the sth_sepnet_metrla.py:cpu model; cap it with --config.train.max_steps on CPU.
    presets.sth_sepnet_cpu(c, num_epochs=6, milestones=(4,))
  return c
