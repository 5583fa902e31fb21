r"""Quickstart: a small ST-LLM on built-in synthetic traffic, a few minutes on a 2-core CPU.

Command:

  python -m stjax.train --config=configs/quickstart.py --workdir=runs/quickstart

No download and no pretrained weights: the data is stjax's synthetic generator (48 sensors on a
road-like graph, 14 days of 5-minute readings with daily/weekly cycles, spreading congestion and
1 % missing readings) under the DCRNN protocol (12 -> 12 steps, masked MAE), and the GPT-2
backbone is a 2-block, 64-wide random-init model trained in full.

Expected result (2-core CPU): test MAE below both naive baselines, printed side by side at the
end and written to runs/quickstart/results.json; measured numbers in docs/results.md.
"""

import ml_collections

from stjax import optim, sharding, trainer
from stjax.data.windows import default_data_config
from stjax.models import st_llm


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # init, dropout and shuffle seed.
  c.overwrite = False  # True: replace a run of a different config in --workdir.

  c.data = default_data_config()
  c.data.name = "synthetic"  # built-in generator; no files needed.
  c.data.protocol = "dcrnn"  # 12 -> 12 steps, 7:1:2 split, masked (0 = missing) MAE.
  c.data.synthetic.num_nodes = 48  # sensors.
  c.data.synthetic.num_steps = 4032  # 14 days of 5-minute steps.

  c.model = st_llm.default_config()
  c.model.llm_layers = 2  # GPT-2 blocks (paper: 6).
  c.model.unfrozen_layers = 2  # U (irrelevant with full training, kept consistent).
  c.model.trainable = "full"  # random init: train everything (PFA only makes sense when pretrained).
  c.model.n_embd = 64  # width d (GPT-2 small: 768).
  c.model.n_head = 4  # heads (head dim 16).
  c.model.vocab_size = 16  # token table rows (unused; ST-LLM feeds embeddings).
  c.model.n_positions = 64  # position rows = max nodes (one token per node).
  c.model.embed_dim = 32  # D of the patch, calendar and node embeddings.
  c.model.dropout = 0.0  # small model, short run: no dropout.
  c.model.attention_dropout = 0.0  # likewise.

  c.optim = optim.default_optim_config()
  c.optim.name = "adamw"  # AdamW.
  c.optim.learning_rate = 2e-3  # peak learning rate (higher than the paper's: small model).
  c.optim.schedule = "warmup_cosine"  # linear warmup then cosine decay to min_lr_ratio.
  c.optim.warmup_steps = 50  # warmup steps.
  c.optim.min_lr_ratio = 0.05  # final lr = 5 % of peak.
  c.optim.grad_clip_norm = 5.0  # clip the global gradient norm.

  c.train = trainer.default_train_config()
  c.train.batch_size = 64  # global batch.
  c.train.num_epochs = 8  # passes over the ~2800 training windows (~44 steps each).
  c.train.eval_every_steps = 0  # validate once per epoch.
  c.train.patience = 4  # early stop after 4 validations without improvement.
  c.train.log_every_steps = 10  # scalars every 10 steps.

  c.mesh = sharding.default_mesh_config()  # data-parallel over all devices.
  return c
