r"""STH-SepNet on BIKE outflow (295 NYC Citi Bike stations, hourly 2023), STH-SepNet protocol (48 -> 48).

Command (paper setting; needs pretrained GPT-2 - a hub id or converted folder - and the
STH-SepNet Bike series, `python -m stjax.data download sthsepnet-bike-outflow`):

  python -m stjax.train --config=configs/sth_sepnet_bike_outflow.py --workdir=runs/sth_sepnet_bike_outflow

Expected (paper setting): near STH-SepNet (GPT-2)'s MAE 5.31 / RMSE 14.24 (unmasked, mean of 48
steps; ANCHORS.md, paper Table C.1). Paper hyperparameters (docs/sth_sepnet.md "Recommended
configs", ../shared/PUBLISHED_CODE.md 3.5, released Bike GPT-2 script): 48 -> 48, split 7:1:2 of
rows, per-node z-score, MSE in scaled units, Adam lr 5e-4, batch 16, 50 epochs, d_ff 32, MultiStep
lr x0.3 after epochs 5/20/40/70, early stopping (patience 10 validations; stjax selects on
validation MAE, the released code on MSE).

CPU variant (`:cpu`): the Citi Bike series is not available offline, so the reduced random-init
model trains on NYCBike2 as staged in ../shared/data (ST-SSL's 10x20 grid, 30-min inflow AND
outflow, 2880 steps) under the STH-SepNet protocol but 12 -> 12 (1992 / 278 / 565 windows; 48 -> 48
would fit the series, 1920 / 242 / 529 windows, but costs ~9x more per step: see
sth_sepnet_metrla.py). Both channels are predicted and reported per channel (`per_channel.outflow`
is this config's number; `sth_sepnet_bike_inflow.py:cpu` is the same run). At most ~8 minutes on
a quiet 2-core CPU; expected to beat both naive baselines (last value, historical average),
printed side by side at the end:

  python -m stjax.train --config=configs/sth_sepnet_bike_outflow.py:cpu --workdir=runs/sth_sepnet_bike_cpu

Measured numbers: docs/results.md (not comparable with the paper: other data, 12 -> 12, tiny
random model).
"""

from stjax import trainer
from stjax.models import sth_sepnet


def get_config(arg: str | None = None):
  variant = trainer.parse_variant(arg, ("cpu",))
  c = trainer.base_config(sth_sepnet.default_config())
  c.seed = 2021  # init, dropout and shuffle seed (the released scripts' seed).

  c.data.name = "sthsepnet-bike-outflow"  # registry name (python -m stjax.data list); --config.data.path for another file.
  c.data.protocol = "sthsepnet"  # 48 -> 48, TSLib 7:1:2 rows, per-node z-score, unmasked metrics (docs/protocols.md).

  c.model.pretrained = "gpt2"  # GPT-2 small from the hub (or a converted folder); needs the weights.
  c.model.llm_layers = 6  # GPT-2 blocks kept (released scripts ask 32 of 12; see docs/sth_sepnet.md).
  c.model.d_model = 768  # patch-embedding width (released GPT-2 scripts).
  c.model.d_ff = 32  # LM features kept per patch token (released Bike: 32).
  c.model.lora_rank = 4  # LoRA rank on attention and MLP projections.
  c.model.lora_alpha = 4.0  # LoRA scale alpha / rank = 1.
  c.model.gamma_init = 0.5  # "mix" variant (the released Bike GPT-2 script uses 0.0; docs/sth_sepnet.md).
  c.model.hyperedge_size = 3  # k of the KNN hyperedges (paper's best).
  c.model.top_k = 20  # neighbours per row of the adaptive graph (MTGNN).
  c.model.hypergraph_refresh = 100  # steps between KNN hyperedge rebuilds.

  c.optim.name = "adam"  # Adam (released: torch.optim.Adam).
  c.optim.learning_rate = 5e-4  # released Bike GPT-2 script.
  c.optim.schedule = "multistep"  # MultiStepLR stepped per epoch.
  c.optim.milestones = (5, 20, 40, 70)  # epochs after which lr *= decay_factor.
  c.optim.decay_factor = 0.3  # gamma of MultiStepLR.
  c.optim.trainable = "lora"  # frozen GPT-2 except its LoRA adapters; everything outside GPT-2 trains.

  c.train.batch_size = 16  # released Bike scripts: 16.
  c.train.num_epochs = 50  # released Bike scripts: 50.
  c.train.patience = 10  # validations (epochs) without a better val MAE before stopping.
  c.train.eval_every_steps = 0  # validate once per epoch.

  if "cpu" in variant:  # reduced model, random init, <= ~8 min on 2 CPU cores
    c.data.name = "nycbike2"  # NYC bike data available offline (inflow + outflow, 30 min).
    c.model.pretrained = ""  # no download: random init.
    c.optim.trainable = "full"  # random weights: freezing them would only hurt.
    c.data.input_len = 12  # 12 -> 12, not 48 -> 48: at 48 steps one batch of 32 costs 29 GFLOP
    c.data.output_len = 12  # (11 s per step here), 12 steps cost 3.1 GFLOP (docs/results.md).
    c.model.llm_layers = 2  # GPT-2 blocks.
    c.model.n_embd = 64  # GPT-2 width.
    c.model.n_head = 4  # GPT-2 heads (head dim 16).
    c.model.vocab_size = 256  # token rows (the prototypes are a Dense over them).
    c.model.n_positions = 64  # position rows (6 patch tokens are used).
    c.model.d_model = 32  # patch-embedding width.
    c.model.d_ff = 32  # LM features kept per patch token.
    c.model.n_heads = 4  # reprogramming heads.
    c.model.num_prototypes = 100  # text prototypes.
    c.model.patch_len = 8  # patches of 8 steps with stride 4: 3 patch tokens from 12 + 4 padded steps.
    c.model.stride = 4  # patch stride (and replication padding).
    c.model.num_layers = 2  # gated TCN + graph layers.
    c.model.residual_channels = 16  # residual-stream channels.
    c.model.conv_channels = 16  # dilated-inception channels.
    c.model.skip_channels = 32  # skip channels.
    c.model.end_channels = 64  # output-head width.
    c.model.node_dim = 16  # node-embedding size.
    c.model.top_k = 10  # neighbours per row of the adaptive graph.
    c.model.hypergraph_refresh = 20  # rebuild the KNN hyperedges more often in a short run.
    c.model.dropout = 0.0  # short run: no temporal-stream dropout.
    c.model.attention_dropout = 0.0  # likewise.
    c.optim.learning_rate = 1e-3  # higher lr: small model, few epochs.
    c.optim.milestones = (3,)  # one decay inside the short run.
    c.train.batch_size = 32  # fewer, larger steps on CPU.
    c.train.num_epochs = 4  # a few passes (62 steps each).
    c.train.patience = 4  # stop after 4 validations without gain.
    c.train.log_every_steps = 10  # scalars every 10 steps.
  return c
