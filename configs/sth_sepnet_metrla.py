r"""STH-SepNet on METR-LA (207 loop detectors, 5-min speed), STH-SepNet protocol (48 -> 48).

Command (paper setting; needs pretrained GPT-2 - a hub id or converted folder - and the
STH-SepNet METR series, `python -m stjax.data download sthsepnet-metr`):

  python -m stjax.train --config=configs/sth_sepnet_metrla.py --workdir=runs/sth_sepnet_metrla

Expected (paper setting): near STH-SepNet (GPT-2)'s MAE 9.57 / RMSE 16.64 (unmasked, mean of 48
steps; ANCHORS.md, paper Table C.1). Paper hyperparameters (docs/sth_sepnet.md "Recommended
configs", ../shared/PUBLISHED_CODE.md 3.5): 48 -> 48, split 7:1:2 of rows, per-node z-score, MSE in
scaled units, Adam lr 3e-4, batch 32, 30 epochs, MultiStep lr x0.3 after epochs 5/20/40/70, early
stopping (patience 10 validations; stjax selects on validation MAE, the released code on MSE).

CPU variant (`:cpu`): a reduced random-init model on the real 7-day METR-LA excerpt staged in
../shared/data (`metr-la-excerpt`: 2016 steps, gaps interpolated by T-GCN) under the same protocol
but 12 -> 12 (1388 / 191 / 392 windows). The excerpt's split would allow 48 -> 48 (1316 / 155 / 356
windows), but there one batch costs 29 GFLOP (11 s per step on the shared 2-core CPU) against
3.1 GFLOP at 12 steps, which does not fit the CPU budget. At most ~8 minutes on a quiet 2-core CPU;
expected to beat both naive baselines (last value, historical average), printed side by side:

  python -m stjax.train --config=configs/sth_sepnet_metrla.py:cpu --workdir=runs/sth_sepnet_metrla_cpu

Measured numbers: docs/results.md (not comparable with the paper: 7 days of data, 12 -> 12, tiny
random model).
"""

from stjax import trainer
from stjax.models import sth_sepnet


def get_config(arg: str | None = None):
  variant = trainer.parse_variant(arg, ("cpu",))
  c = trainer.base_config(sth_sepnet.default_config())
  c.seed = 2021  # init, dropout and shuffle seed (the released scripts' seed).

  c.data.name = "sthsepnet-metr"  # registry name (python -m stjax.data list); --config.data.path for another file.
  c.data.protocol = "sthsepnet"  # 48 -> 48, TSLib 7:1:2 rows, per-node z-score, unmasked metrics (docs/protocols.md).

  c.model.pretrained = "gpt2"  # GPT-2 small from the hub (or a converted folder); needs the weights.
  c.model.llm_layers = 6  # GPT-2 blocks kept (released scripts ask 32 of 12; see docs/sth_sepnet.md).
  c.model.d_model = 768  # patch-embedding width (released GPT-2 scripts).
  c.model.d_ff = 128  # LM features kept per patch token (released METR/PEMS/BJ: 128).
  c.model.lora_rank = 4  # LoRA rank on attention and MLP projections.
  c.model.lora_alpha = 4.0  # LoRA scale alpha / rank = 1.
  c.model.gamma_init = 0.5  # "mix" variant: half pairwise graph, half hypergraph at init.
  c.model.hyperedge_size = 3  # k of the KNN hyperedges (paper's best).
  c.model.top_k = 20  # neighbours per row of the adaptive graph (MTGNN).
  c.model.hypergraph_refresh = 100  # steps between KNN hyperedge rebuilds.

  c.optim.name = "adam"  # Adam (released: torch.optim.Adam).
  c.optim.learning_rate = 3e-4  # released METR/PEMS/BJ GPT-2 scripts.
  c.optim.schedule = "multistep"  # MultiStepLR stepped per epoch.
  c.optim.milestones = (5, 20, 40, 70)  # epochs after which lr *= decay_factor.
  c.optim.decay_factor = 0.3  # gamma of MultiStepLR.
  c.optim.trainable = "lora"  # frozen GPT-2 except its LoRA adapters; everything outside GPT-2 trains.

  c.train.batch_size = 32  # released scripts: 32.
  c.train.num_epochs = 30  # released scripts: 30.
  c.train.patience = 10  # validations (epochs) without a better val MAE before stopping.
  c.train.eval_every_steps = 0  # validate once per epoch.

  if "cpu" in variant:  # reduced model, random init, <= ~8 min on 2 CPU cores
    c.data.name = "metr-la-excerpt"  # the METR-LA data available offline (7 days).
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
    c.optim.milestones = (4,)  # one decay inside the short run.
    c.train.num_epochs = 6  # a few passes (43 steps each).
    c.train.patience = 4  # stop after 4 validations without gain.
    c.train.log_every_steps = 10  # scalars every 10 steps.
  return c
