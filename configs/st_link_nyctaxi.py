r"""ST-LINK on NYCTaxi (266 zones, 30-min pick-ups; `:drop` for drop-offs), ST-LLM protocol.

Commands (paper setting; needs pretrained GPT-2 - a hub id or converted folder - and the data):

  python -m stjax.train --config=configs/st_link_nyctaxi.py --workdir=runs/st_link_nyctaxi
  python -m stjax.train --config=configs/st_link_nyctaxi.py:drop --workdir=runs/st_link_nyctaxi_drop

Expected (paper setting): below ST-LLM's MAE 5.29 (pick) / 5.07 (drop) (ANCHORS.md, ST-LLM Table II).

CPU variant (`:cpu`, combinable as `:cpu`, `:pick`, `:drop`): a reduced random-init model on the ST-LLM taxi data (`python -m stjax.data download taxi-pick`),
at most 20 minutes on 2 CPU cores; expected to beat both naive baselines (last value,
historical average), printed side by side at the end:

  python -m stjax.train --config=configs/st_link_nyctaxi.py:cpu --workdir=runs/st_link_nyctaxi_cpu

Measured numbers (the runs done here): docs/results.md. Paper hyperparameters: batch 64, lr 1e-4 (demand), GPT-2 6 blocks, U = 2 (PFA).
"""

from stjax import presets
from stjax.models import st_link
from stjax.train.config import base_config, parse_variant


def get_config(arg: str | None = None):
  variant = parse_variant(arg, ('cpu', 'pick', 'drop'))
  c = base_config(st_link.default_config())
  c.data.name = (
    "taxi-drop" if "drop" in variant else "taxi-pick"
  )  # registry name (python -m stjax.data list).
  c.data.protocol = "stllm"  # windows, split, scaler, null rule and metrics (docs/protocols.md).
  presets.st_link_paper(
    c,
    learning_rate=1e-4,  # paper: 1e-4 for demand, 2.5e-4 for speed.
    patch_len=3,
  )  # steps per token patch (must divide the 12 input steps).
  if "cpu" in variant:
    presets.st_link_cpu(c, patch_len=12)  # one token per node: the whole input window in one patch.
  return c
