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

from stjax import optim, sharding, trainer
from stjax.data.windows import default_data_config
from stjax.models import st_link


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # init, dropout and shuffle seed.
  c.overwrite = False  # (trainer field; unused by the bench).
  c.data = default_data_config()  # synthetic, DCRNN protocol (12 -> 12, masked MAE).
  c.model = st_link.default_config()
  c.model.llm_layers = 4  # GPT-2 blocks (paper: 6).
  c.model.unfrozen_layers = 2  # PFA U; MRFFN sits in these blocks.
  c.model.trainable = "pfa(2)"  # as with pretrained weights (the step cost is what is measured).
  c.model.n_embd = 256  # width d (GPT-2 small: 768).
  c.model.n_head = 4  # heads of 64 dims (as GPT-2 small).
  c.model.vocab_size = 64  # wte rows (unused with embeddings; small so the state stays small).
  c.optim = optim.default_optim_config()  # AdamW, constant lr.
  c.train = trainer.default_train_config()  # float32 compute.
  c.mesh = sharding.default_mesh_config()  # data parallel over all devices.
  return c
