r"""ST-LINK on NYCBike1 (16x8 grid, hourly inflow/outflow), ST-SSL protocol.

Commands (paper setting; needs pretrained GPT-2 - a hub id or converted folder - and the data):

  python -m stjax.train --config=configs/st_link_nycbike1.py --workdir=runs/st_link_nycbike1

Expected (paper setting): near ST-SSL's MAE 4.94 / 5.26 (in/out; ANCHORS.md, ST-SSL Table 2).

CPU variant (`:cpu`): a reduced random-init model on NYCBike1 as staged in ../shared/data,
at most 20 minutes on 2 CPU cores; expected to beat both naive baselines (last value,
historical average), printed side by side at the end:

  python -m stjax.train --config=configs/st_link_nycbike1.py:cpu --workdir=runs/st_link_nycbike1_cpu

Measured numbers (the runs done here): docs/results.md. Paper hyperparameters: batch 64, lr 1e-4 (demand), GPT-2 6 blocks, U = 2 (PFA).
"""

from stjax import presets
from stjax.models import st_link
from stjax.train.config import base_config, parse_variant


def get_config(arg: str | None = None):
  variant = parse_variant(arg, ('cpu',))
  c = base_config(st_link.default_config())
  c.data.name = "nycbike1"  # registry name (python -m stjax.data list); --config.data.path for another file.
  c.data.protocol = "stssl"  # windows, split, scaler, null rule and metrics (docs/protocols.md).
  presets.st_link_paper(
    c,
    learning_rate=1e-4,  # paper: 1e-4 for demand, 2.5e-4 for speed.
    patch_len=1,
  )  # steps per token patch (must divide the 19 input steps).
  if "cpu" in variant:
    presets.st_link_cpu(c, patch_len=19)  # one token per node: the whole input window in one patch.
  return c
