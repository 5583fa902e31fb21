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

from stjax import trainer
from stjax.models import st_llm


def get_config(arg: str | None = None):
  variant = trainer.parse_variant(arg, ('cpu', 'pick', 'drop'))
  c = trainer.base_config(st_llm.default_config())
  c.seed = 0  # init, dropout and shuffle seed.

  c.data.name = "taxi-drop" if "drop" in variant else "taxi-pick"  # registry name (python -m stjax.data list).
  c.data.protocol = "stllm"  # windows, split, scaler, null rule and metrics (docs/protocols.md).

  c.model.pretrained = "gpt2"  # GPT-2 small from the hub (or a converted folder); needs the weights.
  c.model.llm_layers = 6  # GPT-2 blocks kept (paper: 6).
  c.model.unfrozen_layers = 2  # U: trainable attention blocks on top (paper: 2).
  c.model.trainable = "pfa(2)"  # Partially Frozen Attention with U = 2.

  c.optim.name = "ranger"  # RAdam + lookahead + gradient centralisation, as ST-LLM trains.
  c.optim.b1 = 0.95  # ST-LLM's Ranger betas (0.95, 0.999).
  c.optim.eps = 1e-5  # ST-LLM's Ranger epsilon.
  c.optim.weight_decay = 1e-4  # decoupled weight decay, as ST-LLM.
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
    c.model.n_positions = 512  # one position per node.
    c.model.embed_dim = 32  # D of the patch, calendar and node embeddings.
    c.optim.name = "adamw"  # plain AdamW for the short run.
    c.optim.learning_rate = 2e-3  # higher lr: small model, few steps.
    c.optim.schedule = "warmup_cosine"  # warmup then cosine decay.
    c.optim.warmup_steps = 50  # warmup steps.
    c.optim.min_lr_ratio = 0.05  # final lr = 5 % of peak.
    c.train.num_epochs = 8  # a few passes.
    c.train.patience = 4  # stop after 4 validations without gain.
    c.train.log_every_steps = 10  # scalars every 10 steps.
  return c
