r"""ST-LINK on METR-LA (207 loop detectors, 5-min speed), DCRNN protocol.

Commands (paper setting; needs pretrained GPT-2 - a hub id or converted folder - and the data):

  python -m stjax.train --config=configs/st_link_metrla.py --workdir=runs/st_link_metrla

Expected (paper setting): near the best published METR-LA numbers (ANCHORS.md: STAEformer MAE 2.65 @3 / 3.34 @12); ST-LINK's own table is not available offline.

CPU variant (`:cpu`): a reduced random-init model on the real 7-day METR-LA excerpt staged in ../shared/data (the full series needs `python -m stjax.data download metr-la`),
at most 20 minutes on 2 CPU cores; expected to beat both naive baselines (last value,
historical average), printed side by side at the end:

  python -m stjax.train --config=configs/st_link_metrla.py:cpu --workdir=runs/st_link_metrla_cpu

Measured numbers (the runs done here): docs/results.md. Paper hyperparameters: batch 64, lr 2.5e-4 (speed), GPT-2 6 blocks, U = 2 (PFA).
"""

from stjax import presets
from stjax.models import st_link
from stjax.train.config import base_config, parse_variant


def get_config(arg: str | None = None):
  variant = parse_variant(arg, ('cpu',))
  c = base_config(st_link.default_config())
  c.data.name = "metr-la"  # registry name (python -m stjax.data list); --config.data.path for another file.
  c.data.protocol = "dcrnn"  # windows, split, scaler, null rule and metrics (docs/protocols.md).
  presets.st_link_paper(
    c,
    learning_rate=2.5e-4,  # paper: 1e-4 for demand, 2.5e-4 for speed.
    patch_len=3,
  )  # steps per token patch (must divide the 12 input steps).
  if "cpu" in variant:
    c.data.name = "metr-la-excerpt"  # the data available offline.
    presets.st_link_cpu(c, patch_len=12)  # one token per node: the whole input window in one patch.
  return c
