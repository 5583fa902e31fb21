r"""STH-SepNet on BIKE outflow (295 NYC Citi Bike stations, hourly 2023), STH-SepNet protocol (48 -> 48).

Command (paper setting; needs pretrained GPT-2 - a hub id or converted folder - and the
STH-SepNet Bike series, `python -m stjax.data download sthsepnet-bike-outflow`):

  python -m stjax.train --config=configs/sth_sepnet_bike_outflow.py --workdir=runs/sth_sepnet_bike_outflow

Expected (paper setting): near STH-SepNet (GPT-2)'s MAE 5.31 / RMSE 14.24 (unmasked, mean of 48
steps; ANCHORS.md, paper Table C.1). Paper hyperparameters (docs/sth_sepnet.md "Recommended
configs", ../shared/PUBLISHED_CODE.md 3.5, released Bike GPT-2 script): 48 -> 48, split 7:1:2 of
rows, per-node z-score, MSE in scaled units, Adam lr 5e-4, batch 16, 50 epochs, d_ff 32, MultiStep
lr x0.3 after epochs 5/20/40/70, early stopping (patience 10 validations; stjax selects on
validation MAE, the released code on MSE).

CPU variant (`:cpu`): the Citi Bike series is not available offline, so the reduced random-init
model trains on NYCBike2 as staged in ../shared/data (ST-SSL's 10x20 grid, 30-min inflow AND
outflow, 2880 steps) under the STH-SepNet protocol, 48 -> 48 (1920 / 242 / 529 windows). Both
channels are predicted and reported per channel (`per_channel.outflow` is this config's number;
`sth_sepnet_bike_inflow.py:cpu` is the same run). Unlike the paper, it feeds the spatial stream calendar and node-identity
inputs (docs/sth_sepnet.md, "Extra inputs") and trains on MAE in original units, not MSE in
z-scores (`data.loss`). About 85 minutes on a quiet 2-core CPU; compared with both
naive baselines (last value, historical average), printed side by side at the end:

  python -m stjax.train --config=configs/sth_sepnet_bike_outflow.py:cpu --workdir=runs/sth_sepnet_bike_cpu

Measured numbers: docs/results.md (not comparable with the paper: other data, tiny random model).
"""

from stjax import presets
from stjax.models import sth_sepnet
from stjax.train.config import base_config, parse_variant


def get_config(arg: str | None = None):
  variant = parse_variant(arg, ("cpu",))
  c = base_config(sth_sepnet.default_config())
  c.data.name = "sthsepnet-bike-outflow"  # registry name (python -m stjax.data list); --config.data.path for another file.
  presets.sth_sepnet_bike(c, cpu="cpu" in variant)  # released Bike scripts; :cpu = the NYCBike2 run.
  return c
