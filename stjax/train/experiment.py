"""Setup shared by training, `stjax.evaluate` and `stjax.predict`: data, model, mesh, optimizer and
the sharded state initialiser built from a config."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from stjax import sharding
from stjax.convert import pretrained
from stjax.data import build_data
from stjax.data.windows import EVAL_KEYS, MODEL_INPUT_KEYS
from stjax.errors import UserError
from stjax.kernels import Kernels, resolve_kernels
from stjax.models import build_model
from stjax.train import optim
from stjax.train.config import trainability_policy, validate_config
from stjax.train.state import TrainState, split_variables


@dataclasses.dataclass
class Experiment:
  """Everything built from a config before the first step: data, model, mesh, shardings."""

  config: ml_collections.ConfigDict
  bundle: Any  # stjax.data.DataBundle
  model: nn.Module
  mesh: jax.sharding.Mesh
  rules: tuple
  tx: optax.GradientTransformation
  schedule: Callable | None
  trainable: Any  # pytree of bools like params
  state_shardings: TrainState
  abstract_state: TrainState  # ShapeDtypeStructs with shardings: the restore target
  init_state: Callable[[], TrainState]

  def context(self):
    """Mesh + logical axis rules, active while tracing model code."""
    return _Context(self.mesh, self.rules)

  @functools.cached_property
  def batch_shardings(self) -> dict:
    """Per batch key: rows over data x fsdp, the node axis of x and y over `nodes` (built once;
    every train and eval step puts its batch with these)."""
    return sharding.batch_shardings(self.mesh, EVAL_KEYS)

  @property
  def batch_shards(self) -> int:
    return self.mesh.shape["data"] * self.mesh.shape["fsdp"]


class _Context:
  def __init__(self, mesh, rules):
    self._mesh_cm, self._rules_cm = jax.set_mesh(mesh), nn.logical_axis_rules(rules)

  def __enter__(self):
    self._mesh_cm.__enter__()
    self._rules_cm.__enter__()

  def __exit__(self, *exc):
    self._rules_cm.__exit__(*exc)
    return self._mesh_cm.__exit__(*exc)


def with_resolved_kernels(config, mesh) -> ml_collections.ConfigDict:
  """A copy of `config` whose `kernels` section holds the choices `auto` resolves to on `mesh`
  (its devices' platform and size): what the run executes, as its config.json records."""
  devices = mesh.devices.flat
  kernels = resolve_kernels(
    config.get("kernels"),
    backend=devices[0].platform,
    num_devices=mesh.size,
    attention_dropout=float(config.model.get("attention_dropout", 0.0)),
    dtype=config.model.get("dtype", "float32"),
  )
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.kernels = ml_collections.ConfigDict(dataclasses.asdict(kernels))
  return config


def build_experiment(config, bundle=None, num_train_windows: int | None = None, devices=None) -> Experiment:
  """Data, model, mesh, optimizer and the sharded state initialiser for `config`. The
  experiment's config is `config` with its kernel choices resolved (`with_resolved_kernels`).

  `bundle`: data to use instead of reading config.data (a run folder's stored scaler and protocol,
  see stjax.train.run_folder); it may lack a training split, and then `num_train_windows` (the
  count the run's schedule was built from) sizes the optimizer schedule.
  `devices`: the mesh's devices (default all of this cluster's; `stjax.perf.compile_only` passes
  compile-only TPU devices, so kernels resolve for TPU and the step compiles for it).
  """
  validate_config(config)
  mesh, rules = sharding.make_mesh(config.mesh, devices), sharding.logical_rules(config.mesh)
  config = with_resolved_kernels(config, mesh)
  # --- data ---
  bundle = build_data(config.data) if bundle is None else bundle
  if "train" in bundle.splits:
    num_train_windows = len(bundle.splits["train"])
  elif not num_train_windows:
    raise ValueError("build_experiment: a bundle without a training split needs num_train_windows")
  # --- model init (abstract) ---
  model = build_model(
    config.model,
    bundle.spec,
    kernels=Kernels(**config.kernels),
    pretrained_config=pretrained.backbone_config_of(config.model),
  )
  example = _example(bundle)
  rng = jax.random.PRNGKey(config.seed)
  init_rng, params_rng, dropout_rng = jax.random.split(rng, 3)

  def init_variables(key):
    k1, k2 = jax.random.split(key)
    return model.init({"params": k1, "dropout": k2}, example, train=False)

  # --- sharding ---
  with _Context(mesh, rules):
    boxed = jax.eval_shape(init_variables, params_rng)
    var_shardings = sharding.tree_shardings(boxed, mesh, rules, config.mesh.min_shard_size)
  abstract_vars = sharding.unbox_abstract(boxed)
  params_abs, model_state_abs = split_variables(abstract_vars)
  param_shardings, model_state_shardings = split_variables(dict(var_shardings))
  if mesh.shape["fsdp"] * mesh.shape["tensor"] > 1:
    sharding.assert_sharded(params_abs, param_shardings, config.mesh.min_shard_size)
  trainable = optim.trainable_mask(params_abs, trainability_policy(config))
  steps_per_epoch, total_steps, _ = schedule_of(config, num_train_windows)
  tx, schedule = optim.make_optimizer(
    config.optim, params_abs, trainable, steps_per_epoch=steps_per_epoch, total_steps=total_steps
  )
  opt_abs = jax.eval_shape(tx.init, params_abs)
  rep = sharding.replicated(mesh)
  state_shardings = TrainState(
    step=rep,
    params=param_shardings,
    opt_state=sharding.opt_state_shardings(opt_abs, params_abs, param_shardings, mesh),
    model_state=model_state_shardings,
    rng=rep,
  )

  def init_fn():
    params, model_state = split_variables(nn.meta.unbox(init_variables(params_rng)))
    params = optim.store_frozen(params, trainable, config.train.frozen_dtype)
    return TrainState(
      step=jnp.int32(0), params=params, opt_state=tx.init(params), model_state=model_state, rng=dropout_rng
    )

  jit_init = jax.jit(init_fn, out_shardings=state_shardings)

  def init_state():
    with _Context(mesh, rules):
      state = jit_init()
      return _load_pretrained(config, state, tx, state_shardings, trainable)

  abstract_state = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), jax.eval_shape(init_fn), state_shardings
  )
  del init_rng
  return Experiment(
    config, bundle, model, mesh, rules, tx, schedule, trainable, state_shardings, abstract_state, init_state
  )


def _example(bundle) -> dict:
  """A one-window model input for init: the first training window, or zeros of the spec's shapes
  when the bundle has no training split (the values only seed an init that a restore replaces)."""
  if "train" in bundle.splits:
    return {k: v for k, v in bundle.splits["train"].batch([0]).items() if k in MODEL_INPUT_KEYS}
  s = bundle.spec
  return {
    "x": np.zeros((1, s.input_len, s.num_nodes, s.in_channels), np.float32),
    "tod": np.zeros((1, s.input_len), np.float32),
    "dow": np.zeros((1, s.input_len), np.int32),
  }


def _load_pretrained(config, state: TrainState, tx, shardings: TrainState, trainable) -> TrainState:
  """Merges pretrained language-model weights into params["llm"] when the model config asks (frozen
  ones stored in `config.train.frozen_dtype`), then re-initialises the optimizer state from the
  merged params (lookahead keeps a copy)."""
  if not config.model.get("pretrained", ""):
    return state
  params = pretrained.merge_pretrained(config.model, jax.device_get(state.params))
  params = optim.store_frozen(params, trainable, config.train.frozen_dtype)
  params = jax.device_put(params, shardings.params)
  opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
  return state.replace(params=params, opt_state=opt_state)


def schedule_of(config, num_train_windows: int) -> tuple[int, int, int]:
  """(steps_per_epoch, total_steps, eval_every)."""
  t = config.train
  steps_per_epoch = num_train_windows // t.batch_size
  if steps_per_epoch == 0:
    raise UserError(
      f"config.train.batch_size: {t.batch_size} is larger than the {num_train_windows} training windows"
    )
  total = t.num_epochs * steps_per_epoch
  if t.max_steps:
    total = min(total, t.max_steps)
  return steps_per_epoch, total, t.eval_every_steps or steps_per_epoch
