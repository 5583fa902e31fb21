"""Groups of settings several recipes share: the tiny random GPT-2 and the short run of the
ST-LINK / ST-LLM `:cpu` variants and the quickstart, and the benchmark GPT-2. Each sets fields of a
full experiment config (`stjax.train.config.base_config(...)`) in place."""

from __future__ import annotations

import ml_collections

Config = ml_collections.ConfigDict


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
  """Minutes of training on a CPU: AdamW 2e-3 with warmup and cosine decay, 8 epochs."""
  c.optim.name = "adamw"  # plain AdamW for the short run.
  c.optim.learning_rate = 2e-3  # higher lr: small model, few steps.
  c.optim.schedule = "warmup_cosine"  # linear warmup then cosine decay to min_lr_ratio.
  c.optim.warmup_steps = 50  # warmup steps.
  c.optim.min_lr_ratio = 0.05  # final lr = 5 % of peak.
  c.train.num_epochs = 8  # a few passes.
  c.train.patience = 4  # stop after 4 validations without gain.
  c.train.log_every_steps = 10  # scalars every 10 steps.


def bench_gpt2(c: Config) -> None:
  """GPT-2 shrunk for CPU benchmarks (step cost, not accuracy): 4 blocks, width 256, 4 heads of 64, PFA U = 2."""
  c.model.llm_layers = 4  # GPT-2 blocks (paper: 6).
  c.model.unfrozen_layers = 2  # PFA U (ST-LINK's MRFFN sits in these blocks).
  c.model.trainable = "pfa(2)"  # as with pretrained weights (the step cost is what is measured).
  c.model.n_embd = 256  # width d (GPT-2 small: 768).
  c.model.n_head = 4  # heads of 64 dims (as GPT-2 small).
  c.model.vocab_size = 64  # wte rows (unused with embeddings; small so the state stays small).
