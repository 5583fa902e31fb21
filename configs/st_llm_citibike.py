r"""ST-LLM baseline on Citi Bike (250 stations, 30-min pick-ups; `:drop` for drop-offs), ST-LLM protocol.

Commands (paper setting; needs pretrained GPT-2 - a hub id or converted folder - and the data):

  python -m stjax.train --config=configs/st_llm_citibike.py --workdir=runs/st_llm_citibike
  python -m stjax.train --config=configs/st_llm_citibike.py:drop --workdir=runs/st_llm_citibike_drop

Expected (paper setting): ST-LLM's published MAE 1.99 / RMSE 3.08 (pick), 1.89 / 2.81 (drop) (ANCHORS.md).

CPU variant (`:cpu`, combinable as `:cpu`, `:pick`, `:drop`): a reduced random-init model on the ST-LLM bike data (`python -m stjax.data download bike-pick`),
at most 20 minutes on 2 CPU cores; expected to beat both naive baselines (last value,
historical average), printed side by side at the end:

  python -m stjax.train --config=configs/st_llm_citibike.py:cpu --workdir=runs/st_llm_citibike_cpu

Measured numbers (the runs done here): docs/results.md. Paper hyperparameters: batch 64, lr 1e-4 (demand), GPT-2 6 blocks, U = 2 (PFA).
"""

from stjax import presets
from stjax.models import st_llm
from stjax.train.config import base_config, parse_variant


def get_config(arg: str | None = None):
  variant = parse_variant(arg, ('cpu', 'pick', 'drop'))
  c = base_config(st_llm.default_config())
  c.data.name = (
    "bike-drop" if "drop" in variant else "bike-pick"
  )  # registry name (python -m stjax.data list).
  c.data.protocol = "stllm"  # windows, split, scaler, null rule and metrics (docs/protocols.md).
  presets.st_llm_paper(c, learning_rate=1e-4)  # paper lr for demand.
  if "cpu" in variant:
    presets.st_llm_cpu(c)
  return c
