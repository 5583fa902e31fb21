"""Training: config schema, train state, steps, experiment setup, loop, evaluation and reports.

    python -m stjax.train --config=configs/st_link_pemsbay.py --workdir=runs/pemsbay

| module | what lives there |
|---|---|
| `config` | `base_config`, `default_train_config`, `parse_variant`, `validate_config` |
| `state` | `TrainState` (step, params, opt_state, model_state, rng) |
| `optim` | optax optimizers, schedules, trainability masks (`pfa(U)`, `lora`, regexes) |
| `step` | loss, the train and predict steps, their jit with explicit shardings |
| `experiment` | `build_experiment(config)`: data, model, mesh, optimizer, sharded init |
| `evaluation` | jitted eval step, streaming metrics of a split |
| `checkpoint` | workdir, orbax checkpoints (last / best) |
| `loop` | `train_and_evaluate(config, workdir)` |
| `report` | results.json, results.md, plots |
"""

from stjax.train.config import base_config, default_train_config, parse_variant, validate_config
from stjax.train.experiment import Experiment, build_experiment
from stjax.train.loop import train_and_evaluate

__all__ = [
  "Experiment",
  "base_config",
  "build_experiment",
  "default_train_config",
  "parse_variant",
  "train_and_evaluate",
  "validate_config",
]
