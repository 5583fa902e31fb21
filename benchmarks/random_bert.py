r"""A randomly initialised BERT with the geometry of another (the control without pretraining).

    python -m benchmarks.random_bert --like=FOLDER --seed=0 --output=runs/bert_random/init0

Reads only FOLDER's config (an HF BERT folder or a stjax BERT checkpoint: width, heads, layers,
FFN, vocabulary, positions), initialises `stjax.models.backbones.bert.Bert` with
`jax.random.PRNGKey(seed)` (every weight N(0, 0.02), biases 0, LayerNorms 1 / 0, as transformers
initialises a BertModel) and writes it as an HF folder (model.safetensors + config.json,
`stjax.convert.hf_bert.export`). Pointing `config.model.pretrained` at it trains the same model as
with FOLDER, from random weights. The output folder must not exist (its parents are created).
"""

from __future__ import annotations

import argparse
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from stjax.convert import hf_bert
from stjax.errors import cli_entry
from stjax.models.backbones.bert import Bert


def random_bert(like: str, seed: int, output: str) -> None:
  config = hf_bert.CONVERTER.read_config(like)
  pathlib.Path(output).expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
  params = nn.unbox(
    Bert(config).init(jax.random.PRNGKey(seed), jnp.zeros((1, 1, config.hidden_size)))["params"]
  )
  path = hf_bert.export(config, jax.device_get(params), output)
  print(
    f"random BERT (seed {seed}): {config.num_hidden_layers} layers, width {config.hidden_size}, "
    f"vocab {config.vocab_size} -> {path}"
  )


@cli_entry
def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--like", required=True, help="BERT folder whose geometry is copied")
  parser.add_argument("--seed", type=int, default=0, help="init seed")
  parser.add_argument("--output", required=True, help="new HF folder to write")
  args = parser.parse_args(argv)
  random_bert(args.like, args.seed, args.output)


if __name__ == "__main__":
  main()
