"""Groups of settings shared by the experiment configs in configs/ (each field commented once here).

    c = trainer.base_config(st_link.default_config())
    c.data.name, c.data.protocol = "metr-la", "dcrnn"
    presets.st_link_paper(c, learning_rate=2.5e-4, patch_len=3)
    if "cpu" in variant:
      presets.st_link_cpu(c, patch_len=12)

Each function sets fields of a full experiment config (`trainer.base_config(...)`) in place;
`*_cpu` go on top of `*_paper`. Config files are loaded by path and cannot import each other, so
what they share lives here; what differs between datasets stays in the config file (arguments).
"""

from __future__ import annotations

from typing import Sequence

import ml_collections

Config = ml_collections.ConfigDict


# ST-LINK and ST-LLM: the ST-LLM paper recipe, and the reduced model of the :cpu variants.


def _st_llm_recipe(c: Config, learning_rate: float) -> None:
  """Pretrained GPT-2 with PFA, weight decay, clipping and early stopping as in the ST-LLM paper."""
  c.model.pretrained = "gpt2"  # GPT-2 small from the hub (or a converted folder); needs the weights.
  c.model.llm_layers = 6  # GPT-2 blocks kept (paper: 6).
  c.model.unfrozen_layers = 2  # U: trainable attention blocks on top (paper: 2).
  c.model.trainable = "pfa(2)"  # Partially Frozen Attention with U = 2.
  c.optim.weight_decay = 1e-4  # decoupled weight decay, as ST-LLM.
  c.optim.learning_rate = learning_rate  # paper: 1e-4 for demand, 2.5e-4 for speed.
  c.optim.grad_clip_norm = 5.0  # global-norm clipping (ST-LLM: 5).
  c.train.batch_size = 64  # paper: 64.
  c.train.num_epochs = 100  # upper bound; early stopping decides.
  c.train.patience = 15  # validations (epochs) without a better val MAE before stopping.
  c.train.eval_every_steps = 0  # validate once per epoch.


def st_link_paper(c: Config, *, learning_rate: float, patch_len: int) -> None:
  """ST-LINK paper setting: the ST-LLM recipe with AdamW; patch_len must divide the input length."""
  _st_llm_recipe(c, learning_rate)
  c.model.patch_len = patch_len  # steps per token patch.
  c.optim.name = "adamw"  # AdamW.


def st_llm_paper(c: Config, *, learning_rate: float) -> None:
  """ST-LLM paper setting: its recipe with the released code's Ranger optimizer."""
  _st_llm_recipe(c, learning_rate)
  c.optim.name = "ranger"  # RAdam + lookahead + gradient centralisation, as ST-LLM trains.
  c.optim.b1 = 0.95  # ST-LLM's Ranger betas (0.95, 0.999).
  c.optim.eps = 1e-5  # ST-LLM's Ranger epsilon.


def tiny_gpt2(c: Config) -> None:
  """Random-init GPT-2 of 2 blocks, width 64, 4 heads, trained in full without dropout."""
  c.model.pretrained = ""  # no download: random init.
  c.model.trainable = "full"  # random weights: freezing them would only hurt.
  c.model.llm_layers = 2  # GPT-2 blocks.
  c.model.unfrozen_layers = 2  # U = all blocks (consistent with full training).
  c.model.n_embd = 64  # width d (GPT-2 small: 768).
  c.model.n_head = 4  # heads (head dim 16).
  c.model.vocab_size = 16  # unused token rows (ST-LINK and ST-LLM feed embeddings).
  c.model.dropout = 0.0  # short run: no dropout.
  c.model.attention_dropout = 0.0  # likewise.


def short_run(c: Config) -> None:
  """A few minutes of training on CPU: AdamW 2e-3 with warmup and cosine decay, 8 epochs."""
  c.optim.name = "adamw"  # plain AdamW for the short run.
  c.optim.learning_rate = 2e-3  # higher lr: small model, few steps.
  c.optim.schedule = "warmup_cosine"  # linear warmup then cosine decay to min_lr_ratio.
  c.optim.warmup_steps = 50  # warmup steps.
  c.optim.min_lr_ratio = 0.05  # final lr = 5 % of peak.
  c.train.num_epochs = 8  # a few passes.
  c.train.patience = 4  # stop after 4 validations without gain.
  c.train.log_every_steps = 10  # scalars every 10 steps.


def st_link_cpu(c: Config, *, patch_len: int) -> None:
  """ST-LINK :cpu (<= 20 min on 2 CPU cores): tiny GPT-2, small SE-Attention and MRFFN, short run.

  patch_len: the input length, so the whole window is one patch (one token per node).
  """
  tiny_gpt2(c)
  c.model.patch_len = patch_len  # one token per node: the whole input window in one patch.
  c.model.n_positions = 64  # position rows (no-SE ablation only).
  c.model.embed_dim = 16  # calendar and node embedding width.
  c.model.temporal_dims = 8  # time-rotated dims of the 16-dim heads (half).
  c.model.memory_size = 16  # MRFFN memory slots.
  c.model.memory_key_dim = 16  # MRFFN key width.
  c.model.expert_hidden = 64  # MoE expert width.
  short_run(c)


def st_llm_cpu(c: Config) -> None:
  """ST-LLM :cpu (<= 20 min on 2 CPU cores): tiny GPT-2, short run."""
  tiny_gpt2(c)
  c.model.n_positions = 512  # one position per node.
  c.model.embed_dim = 32  # D of the patch, calendar and node embeddings.
  short_run(c)


# STH-SepNet: the released GPT-2 scripts, and the reduced model of the :cpu variants.


def sth_sepnet_paper(
  c: Config, *, d_ff: int = 128, learning_rate: float = 3e-4, batch_size: int = 32, num_epochs: int = 30
) -> None:
  """STH-SepNet paper setting (released GPT-2 scripts): LoRA GPT-2, Adam, MultiStep x0.3.

  The arguments are what the released scripts set per dataset; the defaults are the METR-LA,
  PEMS03 and BJ500 scripts' (d_ff 128, lr 3e-4, batch 32, 30 epochs), the Bike scripts differ.
  """
  c.seed = 2021  # init, dropout and shuffle seed (the released scripts' seed).
  c.model.pretrained = "gpt2"  # GPT-2 small from the hub (or a converted folder); needs the weights.
  c.model.llm_layers = 6  # GPT-2 blocks kept (released scripts ask 32 of 12; see docs/sth_sepnet.md).
  c.model.d_model = 768  # patch-embedding width (released GPT-2 scripts).
  c.model.d_ff = d_ff  # LM features kept per patch token.
  c.model.lora_rank = 4  # LoRA rank on attention and MLP projections.
  c.model.lora_alpha = 4.0  # LoRA scale alpha / rank = 1.
  c.model.gamma_init = 0.5  # "mix": half pairwise, half hypergraph at init (released Bike script: 0.0).
  c.model.hyperedge_size = 3  # k of the KNN hyperedges (paper's best).
  c.model.top_k = 20  # neighbours per row of the adaptive graph (MTGNN).
  c.model.hypergraph_refresh = 100  # steps between KNN hyperedge rebuilds.
  c.optim.name = "adam"  # Adam (released: torch.optim.Adam).
  c.optim.learning_rate = learning_rate  # peak learning rate.
  c.optim.schedule = "multistep"  # MultiStepLR stepped per epoch.
  c.optim.milestones = (5, 20, 40, 70)  # epochs after which lr *= decay_factor.
  c.optim.decay_factor = 0.3  # gamma of MultiStepLR.
  c.optim.trainable = "lora"  # frozen GPT-2 except its LoRA adapters; everything outside GPT-2 trains.
  c.train.batch_size = batch_size  # global batch.
  c.train.num_epochs = num_epochs  # upper bound; early stopping decides.
  c.train.patience = 10  # validations (epochs) without a better val MAE before stopping.
  c.train.eval_every_steps = 0  # validate once per epoch.


def sth_sepnet_cpu(c: Config, *, num_epochs: int, milestones: Sequence[int]) -> None:
  """STH-SepNet :cpu (METR-LA ~40, NYCBike2 ~85 min on 2 CPU cores): reduced random-init model, 48 -> 48.

  Cost (XLA cost analysis, B=16, N=207): 5.0 GFLOP per step; 98 % is the spatial stream, whose
  convolutions shrink time by 6 per layer (48 -> 42 -> 36), hence 8-channel layers here.

  num_epochs, milestones: the short run's length and its lr decay epochs (one decay inside it).
  """
  c.model.pretrained = ""  # no download: random init.
  c.optim.trainable = "full"  # random weights: freezing them would only hurt.
  c.data.input_len = 48  # 48 -> 48, the paper's horizon (the protocol default; set for clarity).
  c.data.output_len = 48  # steps predicted.
  c.model.llm_layers = 2  # GPT-2 blocks.
  c.model.n_embd = 64  # GPT-2 width.
  c.model.n_head = 4  # GPT-2 heads (head dim 16).
  c.model.vocab_size = 256  # token rows (the prototypes are a Dense over them).
  c.model.n_positions = 64  # position rows (6 patch tokens are used).
  c.model.d_model = 32  # patch-embedding width.
  c.model.d_ff = 32  # LM features kept per patch token.
  c.model.n_heads = 4  # reprogramming heads.
  c.model.num_prototypes = 100  # text prototypes.
  c.model.patch_len = 16  # patches of 16 steps with stride 8: 6 patch tokens (paper layout).
  c.model.stride = 8  # patch stride (and replication padding).
  c.model.num_layers = 2  # gated TCN + graph layers.
  c.model.residual_channels = 8  # residual-stream channels (cost grows with their square).
  c.model.conv_channels = 8  # dilated-inception channels (2 per kernel).
  c.model.skip_channels = 32  # skip channels.
  c.model.end_channels = 64  # output-head width.
  c.model.node_dim = 16  # node-embedding size.
  c.model.top_k = 10  # neighbours per row of the adaptive graph.
  c.model.hypergraph_refresh = 20  # rebuild the KNN hyperedges more often in a short run.
  c.model.dropout = 0.0  # short run: no temporal-stream dropout.
  c.model.attention_dropout = 0.0  # likewise.
  c.model.spatial_dropout = 0.0  # likewise (spatial stream).
  c.model.hypergraph_dropout = 0.0  # likewise (HGAT attention).
  c.optim.learning_rate = 1e-3  # higher lr: small model, few epochs.
  c.optim.milestones = tuple(milestones)  # epochs after which lr *= decay_factor.
  c.train.batch_size = (
    16  # batch of 16 (the released Bike scripts' size; cost per epoch does not depend on it).
  )
  c.train.num_epochs = num_epochs  # a few passes.
  c.train.patience = 4  # stop after 4 validations without gain.
  c.train.log_every_steps = 10  # scalars every 10 steps.


def sth_sepnet_bike(c: Config, *, cpu: bool) -> None:
  """The BIKE inflow / outflow configs (they differ only in `data.name`): the released Bike GPT-2
  scripts; `cpu`: the one NYCBike2 run both name (inflow and outflow are its two channels)."""
  c.data.protocol = (
    "sthsepnet"  # 48 -> 48, TSLib 7:1:2 rows, per-node z-score, unmasked metrics (docs/protocols.md).
  )
  sth_sepnet_paper(
    c,
    d_ff=32,  # LM features kept per patch token (released Bike: 32).
    learning_rate=5e-4,  # released Bike GPT-2 script.
    batch_size=16,  # released Bike scripts: 16.
    num_epochs=50,
  )  # released Bike scripts: 50.
  if cpu:
    c.data.name = "nycbike2"  # NYC bike data available offline (inflow + outflow, 30 min).
    sth_sepnet_cpu(
      c, num_epochs=26, milestones=(20,)
    )  # 240 steps per epoch; val MAE 1.144 (20 epochs at batch 16: 1.174).
    c.train.batch_size = (
      8  # twice the updates per epoch at the same cost per epoch (the model underfits: train ~ val MAE).
    )
    c.model.calendar_dim = 4  # time-of-day/day-of-week input channels (not in the paper; docs/sth_sepnet.md).
    c.model.node_input_dim = 16  # a learned vector per node as input channels (not in the paper; likewise).
    c.data.loss = (
      "masked_mae"  # MAE in original units, the metric (paper: MSE in z-scores; val MAE 1.239 with it).
    )


# Benchmarks (benchmarks/configs/): step cost of a shrunk GPT-2, not accuracy.


def bench_gpt2(c: Config) -> None:
  """GPT-2 shrunk for CPU benchmarks: 4 blocks, width 256, 4 heads of 64, PFA U = 2."""
  c.model.llm_layers = 4  # GPT-2 blocks (paper: 6).
  c.model.unfrozen_layers = 2  # PFA U (ST-LINK's MRFFN sits in these blocks).
  c.model.trainable = "pfa(2)"  # as with pretrained weights (the step cost is what is measured).
  c.model.n_embd = 256  # width d (GPT-2 small: 768).
  c.model.n_head = 4  # heads of 64 dims (as GPT-2 small).
  c.model.vocab_size = 64  # wte rows (unused with embeddings; small so the state stays small).
