r"""Quickstart: a small ST-LLM on built-in synthetic traffic, a few minutes on a 2-core CPU.

Command:

  python -m stjax.train --config=configs/quickstart.py --workdir=runs/quickstart

No download and no pretrained weights: the data is stjax's synthetic generator (48 sensors on a
road-like graph, 14 days of 5-minute readings with daily/weekly cycles, spreading congestion and
1 % missing readings) under the DCRNN protocol (12 -> 12 steps, masked MAE), and the GPT-2
backbone is a 2-block, 64-wide random-init model trained in full. The test metrics are printed
beside both naive baselines at the end and written to runs/quickstart/results.json; measured
numbers in docs/results.md.
"""

import ml_collections

from stjax.models import st_llm
from stjax.recipes import common
from stjax.train.config import base_config


def get_config() -> ml_collections.ConfigDict:
  c = base_config(st_llm.default_config())
  c.data.name = "synthetic"  # built-in generator; no files needed.
  c.data.protocol = "dcrnn"  # 12 -> 12 steps, 7:1:2 split, masked (0 = missing) MAE.
  c.data.synthetic.num_nodes = 48  # sensors.
  c.data.synthetic.num_steps = 4032  # 14 days of 5-minute steps.

  common.tiny_gpt2(c)  # random-init GPT-2: 2 blocks, width 64, 4 heads, trained in full, no dropout.
  c.model.n_positions = 64  # position rows = max nodes (one token per node).
  c.model.embed_dim = 32  # D of the patch, calendar and node embeddings.

  common.short_run(c)  # AdamW 2e-3, warmup + cosine, 8 epochs over ~2800 windows (~44 steps each).
  c.optim.grad_clip_norm = 5.0  # clip the global gradient norm.
  c.train.batch_size = 64  # global batch.
  c.train.eval_every_steps = 0  # validate once per epoch.
  return c
