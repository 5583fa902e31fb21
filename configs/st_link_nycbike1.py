r"""ST-LINK on NYCBike1 (16x8 grid, hourly inflow/outflow), ST-SSL protocol.

Commands (paper setting; needs pretrained GPT-2 - a hub id or converted folder - and the data):

  python -m stjax.train --config=configs/st_link_nycbike1.py --workdir=runs/st_link_nycbike1

Expected (paper setting): near ST-SSL's MAE 4.94 / 5.26 (in/out; ANCHORS.md, ST-SSL Table 2).

CPU variant (`:cpu`): a reduced random-init model on NYCBike1 as staged in ../shared/data,
at most 20 minutes on 2 CPU cores; expected to beat both naive baselines (last value,
historical average), printed side by side at the end:

  python -m stjax.train --config=configs/st_link_nycbike1.py:cpu --workdir=runs/st_link_nycbike1_cpu

Measured numbers (the runs done here): docs/results.md. Paper hyperparameters: batch 64, lr 1e-4 (demand), GPT-2 6 blocks, U = 2 (PFA).
"""

from stjax import trainer
from stjax.models import st_link


def get_config(arg: str | None = None):
  variant = trainer.parse_variant(arg, ('cpu',))
  c = trainer.base_config(st_link.default_config())
  c.seed = 0  # init, dropout and shuffle seed.

  c.data.name = "nycbike1"  # registry name (python -m stjax.data list); --config.data.path for another file.
  c.data.protocol = "stssl"  # windows, split, scaler, null rule and metrics (docs/protocols.md).

  c.model.pretrained = "gpt2"  # GPT-2 small from the hub (or a converted folder); needs the weights.
  c.model.llm_layers = 6  # GPT-2 blocks kept (paper: 6).
  c.model.unfrozen_layers = 2  # U: trainable attention blocks on top (paper: 2).
  c.model.trainable = "pfa(2)"  # Partially Frozen Attention with U = 2.
  c.model.patch_len = 1  # steps per token patch (must divide the input length).

  c.optim.name = "adamw"  # AdamW.
  c.optim.weight_decay = 1e-4  # decoupled weight decay.
  c.optim.learning_rate = 1e-4  # paper: 1e-4 for demand, 2.5e-4 for speed.
  c.optim.grad_clip_norm = 5.0  # global-norm clipping (ST-LLM: 5).

  c.train.batch_size = 64  # paper: 64.
  c.train.num_epochs = 100  # upper bound; early stopping decides.
  c.train.patience = 15  # validations (epochs) without a better val MAE before stopping.
  c.train.eval_every_steps = 0  # validate once per epoch.

  if "cpu" in variant:  # reduced model, random init, <= 20 min on 2 CPU cores
    c.model.pretrained = ""  # no download: random init.
    c.model.trainable = "full"  # random weights: freezing them would only hurt.
    c.model.llm_layers = 2  # GPT-2 blocks.
    c.model.unfrozen_layers = 2  # U = all blocks (consistent with full training).
    c.model.n_embd = 64  # width d.
    c.model.n_head = 4  # heads (head dim 16).
    c.model.vocab_size = 16  # unused token rows (small).
    c.model.dropout = 0.0  # short run: no dropout.
    c.model.attention_dropout = 0.0  # likewise.
    c.model.patch_len = 19  # one token per node: the whole input window in one patch.
    c.model.n_positions = 64  # position rows (no-SE ablation only).
    c.model.embed_dim = 16  # calendar and node embedding width.
    c.model.temporal_dims = 8  # time-rotated dims of the 16-dim heads (half).
    c.model.memory_size = 16  # MRFFN memory slots.
    c.model.memory_key_dim = 16  # MRFFN key width.
    c.model.expert_hidden = 64  # MoE expert width.
    c.optim.name = "adamw"  # plain AdamW for the short run.
    c.optim.learning_rate = 2e-3  # higher lr: small model, few steps.
    c.optim.schedule = "warmup_cosine"  # warmup then cosine decay.
    c.optim.warmup_steps = 50  # warmup steps.
    c.optim.min_lr_ratio = 0.05  # final lr = 5 % of peak.
    c.train.num_epochs = 8  # a few passes.
    c.train.patience = 4  # stop after 4 validations without gain.
    c.train.log_every_steps = 10  # scalars every 10 steps.
  return c
