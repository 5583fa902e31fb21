r"""STH-SepNet on METR-LA (207 loop detectors, 5-min speed), STH-SepNet protocol (48 -> 48).

Command (paper setting; needs pretrained GPT-2 - a hub id or converted folder - and the
STH-SepNet METR series, `python -m stjax.data download sthsepnet-metr`):

  python -m stjax.train --config=configs/sth_sepnet_metrla.py --workdir=runs/sth_sepnet_metrla

Expected (paper setting): near STH-SepNet (GPT-2)'s MAE 9.57 / RMSE 16.64 (unmasked, mean of 48
steps; ANCHORS.md, paper Table C.1). Paper hyperparameters (docs/sth_sepnet.md "Recommended
configs", ../shared/PUBLISHED_CODE.md 3.5): 48 -> 48, split 7:1:2 of rows, per-node z-score, MSE in
scaled units, Adam lr 3e-4, batch 32, 30 epochs, MultiStep lr x0.3 after epochs 5/20/40/70, early
stopping (patience 10 validations; stjax selects on validation MAE, the released code on MSE).

CPU variant (`:cpu`): a reduced random-init model on the real 7-day METR-LA excerpt staged in
../shared/data (`metr-la-excerpt`: 2016 steps, gaps interpolated by T-GCN) under the same protocol,
48 -> 48 (1316 / 155 / 356 windows), 8-channel spatial layers (5 GFLOP per step of 16; see
stjax/presets.py). About 25 minutes on a 2-core CPU; expected to beat both naive baselines
(last value, historical average), printed side by side:

  python -m stjax.train --config=configs/sth_sepnet_metrla.py:cpu --workdir=runs/sth_sepnet_metrla_cpu

Measured numbers: docs/results.md (not comparable with the paper: 7 days of data, tiny random
model).
"""

from stjax import presets
from stjax.models import sth_sepnet
from stjax.train.config import base_config, parse_variant


def get_config(arg: str | None = None):
  variant = parse_variant(arg, ("cpu",))
  c = base_config(sth_sepnet.default_config())
  c.data.name = (
    "sthsepnet-metr"  # registry name (python -m stjax.data list); --config.data.path for another file.
  )
  c.data.protocol = (
    "sthsepnet"  # 48 -> 48, TSLib 7:1:2 rows, per-node z-score, unmasked metrics (docs/protocols.md).
  )
  presets.sth_sepnet_paper(
    c
  )  # the released METR/PEMS/BJ GPT-2 scripts (d_ff 128, lr 3e-4, batch 32, 30 epochs).
  if "cpu" in variant:
    c.data.name = "metr-la-excerpt"  # the METR-LA data available offline (7 days).
    presets.sth_sepnet_cpu(c, num_epochs=10, milestones=(8,))  # 82 steps per epoch, one lr decay.
  return c
