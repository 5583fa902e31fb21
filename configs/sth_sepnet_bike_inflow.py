r"""STH-SepNet on BIKE inflow (295 NYC Citi Bike stations, hourly 2023), STH-SepNet protocol (48 -> 48).

Paper setting, BERT-base as the paper's Table 1 (`python -m stjax.data download
sthsepnet-bike-inflow`; the pretrained weights from the hub or a converted folder); `:gpt2` for its
GPT-2 variant (the released Bike scripts' settings for each):

  python -m stjax.train --config=configs/sth_sepnet_bike_inflow.py --workdir=runs/sth_sepnet_bike_inflow
  python -m stjax.train --config=configs/sth_sepnet_bike_inflow.py:gpt2 --workdir=runs/sth_sepnet_bike_inflow_gpt2

`:cpu` (`:cpu,gpt2` with a tiny random GPT-2): a reduced model with a tiny random BERT on NYCBike2
(`python -m stjax.data download nycbike2`: a 10x20 grid, 30-min inflow AND outflow), 48 -> 48.
This config's number is `per_channel.inflow`; `sth_sepnet_bike_outflow.py:cpu` is the same run
(its `per_channel.outflow`). Unlike the paper it feeds the spatial stream calendar and
node-identity inputs and trains on MAE in original units (docs/sth_sepnet.md, "Extra inputs");
compared with the naive baselines at the end:

  python -m stjax.train --config=configs/sth_sepnet_bike_inflow.py:cpu --workdir=runs/sth_sepnet_bike_cpu

Settings: stjax/recipes/sth_sepnet.py, docs/sth_sepnet.md. Measured and published numbers:
docs/results.md (the :cpu run is not comparable with the paper: other data, tiny random model).
"""

from stjax.recipes import sth_sepnet


def get_config(arg: str | None = None):
  return sth_sepnet.config("sthsepnet-bike-inflow", arg)
