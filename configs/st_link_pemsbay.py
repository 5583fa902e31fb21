r"""ST-LINK on PEMS-BAY (325 sensors, 5-min speed), DCRNN protocol.

Commands (paper setting; needs pretrained GPT-2 - a hub id or converted folder - and the data):

  python -m stjax.train --config=configs/st_link_pemsbay.py --workdir=runs/st_link_pemsbay

Expected (paper setting): near the best published PEMS-BAY numbers (ANCHORS.md: STAEformer MAE 1.31 @3 / 1.88 @12).

CPU variant (`:cpu`): a reduced random-init model on the full PEMS-BAY series (`python -m stjax.data download pems-bay`),
at most 20 minutes on 2 CPU cores; expected to beat both naive baselines (last value,
historical average), printed side by side at the end:

  python -m stjax.train --config=configs/st_link_pemsbay.py:cpu --workdir=runs/st_link_pemsbay_cpu

Measured numbers (the runs done here): docs/results.md. Paper hyperparameters: batch 64, lr 2.5e-4 (speed), GPT-2 6 blocks, U = 2 (PFA).
"""

from stjax import presets
from stjax.models import st_link
from stjax.train.config import base_config, parse_variant


def get_config(arg: str | None = None):
  variant = parse_variant(arg, ('cpu',))
  c = base_config(st_link.default_config())
  c.data.name = "pems-bay"  # registry name (python -m stjax.data list); --config.data.path for another file.
  c.data.protocol = "dcrnn"  # windows, split, scaler, null rule and metrics (docs/protocols.md).
  presets.st_link_paper(
    c,
    learning_rate=2.5e-4,  # paper: 1e-4 for demand, 2.5e-4 for speed.
    patch_len=3,
  )  # steps per token patch (must divide the 12 input steps).
  if "cpu" in variant:
    presets.st_link_cpu(c, patch_len=12)  # one token per node: the whole input window in one patch.
  return c
