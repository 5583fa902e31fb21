r"""ST-LLM at CPU benchmark size: GPT-2 geometry shrunk (4 blocks, width 256, 4 heads of 64),
everything else the ST-LLM defaults (one token per node, causal GPT-2 with wpe, PFA U = 2,
dropout 0.1, float32).

  python -m stjax.bench --config=benchmarks/configs/st_llm_cpu.py --batch=4 --nodes=207 --steps=10
  python benchmarks/compare_torch.py --config=benchmarks/configs/st_llm_cpu.py --batch=4 --nodes=207

Paper size on a GPU: --config.model.n_embd=768 --config.model.n_head=12 --config.model.llm_layers=6
--config.model.embed_dim=256 --nodes=266 --batch=64.
The data is always stjax's synthetic series (the bench overrides config.data).
"""

import ml_collections

from stjax.models import st_llm
from stjax.recipes import common
from stjax.train.config import base_config


def get_config() -> ml_collections.ConfigDict:
  c = base_config(st_llm.default_config())  # data: synthetic, DCRNN protocol; AdamW, constant lr.
  common.bench_gpt2(c)  # 4 blocks, width 256, 4 heads of 64, PFA U = 2.
  c.model.embed_dim = 64  # D of E_P, E_T, E_S (d / 4 here; the paper's 3D = d is not required).
  return c
