"""The experiment config schema: every section at its documented default, and its validation."""

from __future__ import annotations

import ml_collections

from stjax import sharding
from stjax.data.windows import default_data_config
from stjax.errors import UserError
from stjax.kernels import default_kernel_config
from stjax.models import registry
from stjax.train import optim


def default_train_config() -> ml_collections.ConfigDict:
  """`config.train` with every field documented; configs start from this and override."""
  c = ml_collections.ConfigDict()
  c.batch_size = 64  # global batch size (all devices and hosts together).
  c.eval_batch_size = 0  # batch size for validation/test; 0 = batch_size.
  c.num_epochs = 100  # passes over the training windows.
  c.max_steps = 0  # hard cap on optimizer steps; 0 = no cap (num_epochs decides).
  c.eval_every_steps = 0  # validate every N steps; 0 = once per epoch.
  c.checkpoint_every_steps = 0  # save checkpoints/last every N steps; 0 = at every validation.
  c.keep_checkpoints = 3  # how many of the latest checkpoints to keep.
  c.patience = 10  # stop after this many validations without a better val MAE; 0 = never stop.
  c.log_every_steps = 50  # write train scalars (metrics.jsonl, TensorBoard) every N steps.
  c.compute_dtype = "float32"  # "float32" or "bfloat16" forward/backward (params stay float32); with
  # config.model.dtype = "bfloat16" the LLM computes in bf16 too (bf16 end to end; loss and metrics float32).
  c.frozen_dtype = "float32"  # "bfloat16": params the trainability mask freezes are STORED in bf16 (no
  # float32 copy; they never change); a memory lever (docs/scaling.md). Trainable params stay float32.
  c.plot_nodes = 4  # how many nodes predictions.png shows: the busiest (largest mean training target).
  c.plot_node_ids = ()  # node indices to show instead, e.g. (0, 17); () = the busiest `plot_nodes`.
  c.progress_bar = True  # tqdm progress bar on process 0.
  return c


def base_config(model_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A complete experiment config with every section at its documented default; config files
  start from this and override (each default is commented where it is defined)."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # init, dropout and shuffle seed.
  c.overwrite = False  # True: replace a run of a different config in --workdir.
  c.data = default_data_config()  # stjax/data/windows.py
  c.model = model_config  # the model module's default_config()
  c.optim = optim.default_optim_config()  # stjax/train/optim.py
  c.train = default_train_config()  # above
  c.mesh = sharding.default_mesh_config()  # stjax/sharding.py
  c.kernels = default_kernel_config()  # stjax/kernels: backend-specific implementations (auto = per backend)
  return c


def parse_variant(arg: str | None, allowed: tuple[str, ...]) -> set[str]:
  """`--config=file.py:a,b` -> {"a", "b"}; UserError naming the allowed variants otherwise."""
  tokens = {t.strip() for t in (arg or "").split(",") if t.strip()}
  bad = sorted(tokens - set(allowed))
  if bad:
    raise UserError(f"--config variant {', '.join(bad)!r} unknown; allowed: {', '.join(allowed)}")
  return tokens


def validate_config(config) -> None:
  """UserError for unknown fields in the trainer-owned parts of the config."""
  required = {"seed", "overwrite", "data", "model", "optim", "train", "mesh"}
  known_top = required | {"kernels"}  # absent kernels = every choice auto
  missing = sorted(required - set(config.keys()))
  if missing:
    raise UserError(f"config: missing field(s) {', '.join(missing)}")
  unknown = sorted(set(config.keys()) - known_top)
  if unknown:
    raise UserError(f"config: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known_top))}")
  defaults = {
    "train": default_train_config(),
    "mesh": sharding.default_mesh_config(),
    "optim": optim.default_optim_config(),
    "model": _model_defaults(config.model.get("name")),
    "kernels": default_kernel_config() if "kernels" in config else None,
  }
  for name, default in defaults.items():
    if default is None:
      continue
    unknown = sorted(set(config[name].keys()) - set(default.keys()))
    if unknown:
      raise UserError(f"config.{name}: unknown field(s) {', '.join(unknown)}")
    if name in ("train", "optim", "mesh"):
      missing = sorted(set(default.keys()) - set(config[name].keys()))
      if missing:
        raise UserError(
          f"config.{name}: missing field(s) {', '.join(missing)} (start the config "
          f"from stjax's default_{name}_config())"
        )
  t = config.train
  for field in ("compute_dtype", "frozen_dtype"):
    if t[field] not in ("float32", "bfloat16"):
      raise UserError(f"config.train.{field}: {t[field]!r} is not float32 or bfloat16")
  for field in ("batch_size", "num_epochs"):
    if t[field] <= 0:
      raise UserError(f"config.train.{field}: must be positive, got {t[field]}")
  for field in ("max_steps", "eval_every_steps", "checkpoint_every_steps", "patience", "eval_batch_size"):
    if t[field] < 0:
      raise UserError(f"config.train.{field}: must be >= 0, got {t[field]}")


def trainability_policy(config):
  """The freezing policy: `config.model.trainable` for models that define it (it is tied to their
  architecture, e.g. pfa(U) with U = unfrozen_layers), else `config.optim.trainable`. Setting both
  to different values is refused, so there is one source of truth."""
  model_policy, optim_policy = config.model.get("trainable"), config.optim.trainable
  if model_policy is None:
    return optim_policy
  if optim_policy not in ("full", model_policy):
    raise UserError(
      f"config.optim.trainable: {optim_policy!r} conflicts with config.model.trainable "
      f"{model_policy!r}; set the policy in config.model.trainable only"
    )
  return model_policy


def _model_defaults(name) -> ml_collections.ConfigDict:
  """The `default_config()` of the model module registered as `name` (UserError if unknown)."""
  if name not in registry.model_names():
    raise UserError(f"config.model.name: unknown model {name!r}; known: {', '.join(registry.model_names())}")
  return registry.default_config(name)
