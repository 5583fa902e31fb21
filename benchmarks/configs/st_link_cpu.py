r"""ST-LINK at CPU benchmark size: GPT-2 geometry shrunk (4 blocks, width 256, 4 heads of 64),
everything else the ST-LINK defaults (patch 3, split SE-Attention 32 + 32 dims, MRFFN in the last 2
blocks, PFA U = 2, RevIN, dropout 0.1, float32).

  python -m stjax.bench --config=benchmarks/configs/st_link_cpu.py --batch=4 --nodes=207 --steps=10
  python benchmarks/compare_torch.py --config=benchmarks/configs/st_link_cpu.py --batch=4 --nodes=207

For PEMS-BAY shapes on a GPU use GPT-2 small: --config.model.n_embd=768 --config.model.n_head=12
--config.model.llm_layers=6 --nodes=325 --batch=64 (and --config.train.compute_dtype=bfloat16).
The data is always stjax's synthetic series (the bench overrides config.data).
"""

import ml_collections

from stjax.models import st_link
from stjax.recipes import common
from stjax.train.config import base_config


def get_config() -> ml_collections.ConfigDict:
  c = base_config(st_link.default_config())  # data: synthetic, DCRNN protocol; AdamW, constant lr.
  common.bench_gpt2(c)  # 4 blocks, width 256, 4 heads of 64, PFA U = 2.
  return c
