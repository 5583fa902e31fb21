r"""ST-LLM baseline on NYCTaxi (266 zones, 30-min pick-ups; `:drop` for drop-offs), ST-LLM protocol.

Commands (paper setting; needs pretrained GPT-2 - a hub id or converted folder - and the data):

  python -m stjax.train --config=configs/st_llm_nyctaxi.py --workdir=runs/st_llm_nyctaxi
  python -m stjax.train --config=configs/st_llm_nyctaxi.py:drop --workdir=runs/st_llm_nyctaxi_drop

Expected (paper setting): ST-LLM's published MAE 5.29 / RMSE 9.42 (pick), 5.07 / 9.07 (drop) (ANCHORS.md).

CPU variant (`:cpu`, combinable as `:cpu`, `:pick`, `:drop`): a reduced random-init model on the ST-LLM taxi data (`python -m stjax.data download taxi-pick`),
at most 20 minutes on 2 CPU cores; expected to beat both naive baselines (last value,
historical average), printed side by side at the end:

  python -m stjax.train --config=configs/st_llm_nyctaxi.py:cpu --workdir=runs/st_llm_nyctaxi_cpu

Measured numbers (the runs done here): docs/results.md. Paper hyperparameters: batch 64, lr 1e-4 (demand), GPT-2 6 blocks, U = 2 (PFA).
"""

from stjax import presets
from stjax.models import st_llm
from stjax.train.config import base_config, parse_variant


def get_config(arg: str | None = None):
  variant = parse_variant(arg, ('cpu', 'pick', 'drop'))
  c = base_config(st_llm.default_config())
  c.data.name = (
    "taxi-drop" if "drop" in variant else "taxi-pick"
  )  # registry name (python -m stjax.data list).
  c.data.protocol = "stllm"  # windows, split, scaler, null rule and metrics (docs/protocols.md).
  presets.st_llm_paper(c, learning_rate=1e-4)  # paper lr for demand.
  if "cpu" in variant:
    presets.st_llm_cpu(c)
  return c
