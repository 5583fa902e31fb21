"""ST-LLM (the baseline of configs/st_llm_*.py): the paper setting and the `:cpu` variant.

`paper_recipe` is also ST-LINK's (ST-LINK trains with the ST-LLM recipe).
"""

from __future__ import annotations

import ml_collections

from stjax.models import st_llm
from stjax.recipes import common, datasets
from stjax.recipes.datasets import DatasetRecipe

Config = ml_collections.ConfigDict


def paper_recipe(c: Config, d: DatasetRecipe) -> None:
  """Pretrained GPT-2 with PFA, weight decay, clipping and early stopping as in the ST-LLM paper."""
  c.model.pretrained = "gpt2"  # GPT-2 small from the hub (or a converted folder); needs the weights.
  c.model.llm_layers = 6  # GPT-2 blocks kept (paper: 6).
  c.model.unfrozen_layers = 2  # U: trainable attention blocks on top (paper: 2).
  c.model.trainable = "pfa(2)"  # Partially Frozen Attention with U = 2.
  c.optim.weight_decay = 1e-4  # decoupled weight decay, as ST-LLM.
  c.optim.learning_rate = 1e-4 if d.demand else 2.5e-4  # paper: 1e-4 for demand, 2.5e-4 for speed.
  c.optim.grad_clip_norm = 5.0  # global-norm clipping (ST-LLM: 5).
  c.train.batch_size = 64  # paper: 64.
  c.train.num_epochs = 100  # upper bound; early stopping decides.
  c.train.patience = 15  # validations (epochs) without a better val MAE before stopping.
  c.train.eval_every_steps = 0  # validate once per epoch.


def paper(c: Config, d: DatasetRecipe) -> None:
  """ST-LLM paper setting: its recipe with the released code's Ranger optimizer."""
  paper_recipe(c, d)
  c.optim.name = "ranger"  # RAdam + lookahead + gradient centralisation, as ST-LLM trains.
  c.optim.b1 = 0.95  # ST-LLM's Ranger betas (0.95, 0.999).
  c.optim.eps = 1e-5  # ST-LLM's Ranger epsilon.


def cpu(c: Config) -> None:
  """The `:cpu` variant: tiny random GPT-2, short run (minutes on 2 CPU cores)."""
  common.tiny_gpt2(c)
  c.model.n_positions = 512  # one position per node.
  c.model.embed_dim = 32  # D of the patch, calendar and node embeddings.
  common.short_run(c)


def config(dataset: str, arg: str | None) -> Config:
  """The config of `--config=configs/st_llm_<dataset>.py[:arg]` (variants: cpu, pick/drop)."""
  c, d, variant = datasets.start(st_llm.default_config(), dataset, arg)
  paper(c, d)
  if "cpu" in variant:
    cpu(c)
  return c
