r"""STH-SepNet on BIKE outflow (295 NYC Citi Bike stations, hourly 2023), STH-SepNet protocol (48 -> 48).

The outflow twin of `sth_sepnet_bike_inflow.py` (the same recipe on the outflow series; its
docstring tells the variants). Paper setting with BERT-base, `:gpt2` with GPT-2 (the pretrained
weights from the hub or a converted folder; `python -m stjax.data download sthsepnet-bike-outflow`):

  python -m stjax.train --config=configs/sth_sepnet_bike_outflow.py --workdir=runs/sth_sepnet_bike_outflow
  python -m stjax.train --config=configs/sth_sepnet_bike_outflow.py:gpt2 --workdir=runs/sth_sepnet_bike_outflow_gpt2

`:cpu` (`:cpu,gpt2`) is the NYCBike2 run of `sth_sepnet_bike_inflow.py:cpu`; this config's number
is its `per_channel.outflow`:

  python -m stjax.train --config=configs/sth_sepnet_bike_outflow.py:cpu --workdir=runs/sth_sepnet_bike_cpu
"""

from stjax.recipes import sth_sepnet


def get_config(arg: str | None = None):
  return sth_sepnet.config("sthsepnet-bike-outflow", arg)
