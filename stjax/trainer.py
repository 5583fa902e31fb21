"""The training loop: `train_and_evaluate(config, workdir)`.

Phases, in order (each marked below): setup, data, model init, sharding, restore, loop, eval,
final. The jitted step maps a `TrainState` to a new one and returns measurements; everything that
changes lives in that state, so checkpoints resume exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from stjax import checkpoint as ckpt_lib
from stjax import distributed, sharding
from stjax.errors import UserError
from stjax.train_state import TrainState, split_variables


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
  c.compute_dtype = "float32"  # "float32" or "bfloat16" forward/backward (params stay float32).
  c.plot_nodes = 4  # nodes shown in the predictions-vs-truth plot.
  c.progress_bar = True  # tqdm progress bar on process 0.
  return c


def base_config(model_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A complete experiment config with every section at its documented default; config files
  start from this and override (each default is commented where it is defined)."""
  from stjax import optim
  from stjax.data.windows import default_data_config

  c = ml_collections.ConfigDict()
  c.seed = 0  # init, dropout and shuffle seed.
  c.overwrite = False  # True: replace a run of a different config in --workdir.
  c.data = default_data_config()  # stjax/data/windows.py
  c.model = model_config  # the model module's default_config()
  c.optim = optim.default_optim_config()  # stjax/optim.py
  c.train = default_train_config()  # above
  c.mesh = sharding.default_mesh_config()  # stjax/sharding.py
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
  known_top = {"seed", "overwrite", "data", "model", "optim", "train", "mesh"}
  missing = sorted(known_top - set(config.keys()))
  if missing:
    raise UserError(f"config: missing field(s) {', '.join(missing)}")
  unknown = sorted(set(config.keys()) - known_top)
  if unknown:
    raise UserError(f"config: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known_top))}")
  from stjax import optim

  defaults = {"train": default_train_config(), "mesh": sharding.default_mesh_config(),
              "optim": optim.default_optim_config(), "model": _model_defaults(config.model.get("name"))}
  for name, default in defaults.items():
    unknown = sorted(set(config[name].keys()) - set(default.keys()))
    if unknown:
      raise UserError(f"config.{name}: unknown field(s) {', '.join(unknown)}")
    if name in ("train", "optim", "mesh"):
      missing = sorted(set(default.keys()) - set(config[name].keys()))
      if missing:
        raise UserError(f"config.{name}: missing field(s) {', '.join(missing)} (start the config "
                        f"from stjax's default_{name}_config())")
  t = config.train
  if t.compute_dtype not in ("float32", "bfloat16"):
    raise UserError(f"config.train.compute_dtype: {t.compute_dtype!r} is not float32 or bfloat16")
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
    raise UserError(f"config.optim.trainable: {optim_policy!r} conflicts with config.model.trainable "
                    f"{model_policy!r}; set the policy in config.model.trainable only")
  return model_policy


def _model_defaults(name) -> ml_collections.ConfigDict:
  """The `default_config()` of the model module registered as `name` (UserError if unknown)."""
  import importlib

  from stjax.models import registry

  if name not in registry.model_names():
    raise UserError(f"config.model.name: unknown model {name!r}; known: {', '.join(registry.model_names())}")
  return importlib.import_module(registry._MODULES[name]).default_config()


# ----------------------------------------------------------------------------------------------
# Loss and step.


def make_loss_fn(protocol, target_scaler) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """(pred [B, T_out, N, C] scaled, y [B, T_out, N, C] original units) -> scalar loss.

  "masked_mae": MAE in original units over the targets the protocol's null rule keeps;
  "mse": mean squared error in scaled units over all targets (STH-SepNet's training loss).
  """
  from stjax import metrics

  if protocol.loss == "masked_mae":
    return lambda pred, y: metrics.masked_mae(target_scaler.inverse(pred), y, protocol.null_rule)
  if protocol.loss == "mse":
    return lambda pred, y: jnp.mean(jnp.square(pred - target_scaler.transform(y)))
  raise UserError(f"protocol {protocol.name}: unknown loss {protocol.loss!r}")


def _cast_floats(tree, dtype):
  return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _cast_inputs(inputs: dict, dtype) -> dict:
  """The series x in the compute dtype; tod / dow stay as they are (bf16 keeps 8 significant bits:
  floor(tod * 288) of a bf16 tod picks the wrong time-of-day slot for 126 of the 288)."""
  return {**inputs, "x": inputs["x"].astype(dtype)}


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, loss_fn, trainable,
                    compute_dtype: str = "float32", schedule: Callable | None = None):
  """The (un-jitted) step: (state, batch) -> (new state, measurements).

  Args:
    model: the Flax module.
    tx: the optimizer (already masked so frozen params never change).
    loss_fn: (pred, y) -> scalar, see `make_loss_fn`.
    trainable: pytree of bools like params; gradients of frozen params are dropped before the
      optimizer (so XLA need not compute them) and excluded from the gradient norm.
    compute_dtype: "bfloat16" runs forward/backward with bf16 params and inputs; loss in float32.
    schedule: step -> learning rate, reported as `lr`.
  """
  dtype = jnp.bfloat16 if compute_dtype == "bfloat16" else None
  train_keys = ("x", "tod", "dow")

  def step(state: TrainState, batch: dict[str, jax.Array]):
    inputs = {k: batch[k] for k in train_keys}
    collections = sorted(state.model_state)

    def loss_of(params):
      p, x = params, inputs
      if dtype is not None:
        p, x = _cast_floats(params, dtype), _cast_inputs(inputs, dtype)
      (pred, aux), new_model_state = model.apply(
          {"params": p, **state.model_state}, x, train=True,
          rngs={"dropout": jax.random.fold_in(state.rng, state.step)}, mutable=collections)
      data_loss = loss_fn(pred.astype(jnp.float32), batch["y"])
      aux = {k: jnp.asarray(v, jnp.float32) for k, v in aux.items()}
      aux_loss = aux.get("aux_loss", jnp.float32(0))
      return data_loss + aux_loss, (data_loss, aux, new_model_state)

    (loss, (data_loss, aux, new_model_state)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    grads = jax.tree.map(lambda g, t: g if t else jnp.zeros_like(g), grads, trainable)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if dtype is not None:  # Mutated collections come back in the compute dtype.
      new_model_state = jax.tree.map(lambda new, old: new.astype(old.dtype), dict(new_model_state),
                                     state.model_state)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              model_state=dict(new_model_state))
    measurements = {"loss": loss, "data_loss": data_loss, "grad_norm": optax.tree.norm(grads),
                    **{f"aux/{k}": v for k, v in aux.items() if k != "aux_loss"}}
    measurements["aux_loss"] = aux.get("aux_loss", jnp.float32(0))
    if schedule is not None:
      measurements["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
    return new_state, measurements

  return step


def make_predict_fn(model: nn.Module, target_scaler, compute_dtype: str = "float32"):
  """(state, batch) -> predictions [B, T_out, N, C] float32 in ORIGINAL units (eval mode)."""
  dtype = jnp.bfloat16 if compute_dtype == "bfloat16" else None

  def predict(state: TrainState, batch):
    variables, x = state.variables(), {k: batch[k] for k in ("x", "tod", "dow")}
    if dtype is not None:
      variables, x = _cast_floats(variables, dtype), _cast_inputs(x, dtype)
    pred, _ = model.apply(variables, x, train=False)
    return target_scaler.inverse(pred.astype(jnp.float32))

  return predict


# ----------------------------------------------------------------------------------------------
# Setup shared by training, `stjax.evaluate` and `stjax.predict`.


@dataclasses.dataclass
class Experiment:
  """Everything built from a config before the first step: data, model, mesh, shardings."""

  config: ml_collections.ConfigDict
  bundle: Any                 # stjax.data.DataBundle
  model: nn.Module
  mesh: jax.sharding.Mesh
  rules: tuple
  tx: optax.GradientTransformation
  schedule: Callable | None
  trainable: Any              # pytree of bools like params
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
    return sharding.batch_shardings(self.mesh, _EVAL_KEYS)

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


def build_experiment(config) -> Experiment:
  """Data, model, mesh, optimizer and the sharded state initialiser for `config`."""
  from stjax import optim
  from stjax.data import build_data
  from stjax.models import build_model

  validate_config(config)
  # --- data ---
  bundle = build_data(config.data)
  # --- model init (abstract) ---
  model = build_model(config.model, bundle.spec)
  example = {k: v for k, v in bundle.splits["train"].batch([0]).items() if k in ("x", "tod", "dow")}
  rng = jax.random.PRNGKey(config.seed)
  init_rng, params_rng, dropout_rng = jax.random.split(rng, 3)

  def init_variables(key):
    k1, k2 = jax.random.split(key)
    return model.init({"params": k1, "dropout": k2}, example, train=False)

  # --- sharding ---
  mesh, rules = sharding.make_mesh(config.mesh), sharding.logical_rules(config.mesh)
  with _Context(mesh, rules):
    boxed = jax.eval_shape(init_variables, params_rng)
    var_shardings = sharding.tree_shardings(boxed, mesh, rules, config.mesh.min_shard_size)
  abstract_vars = sharding.unbox_abstract(boxed)
  params_abs, model_state_abs = split_variables(abstract_vars)
  param_shardings, model_state_shardings = split_variables(dict(var_shardings))
  if mesh.shape["fsdp"] * mesh.shape["tensor"] > 1:
    sharding.assert_sharded(params_abs, param_shardings, config.mesh.min_shard_size)
  trainable = optim.trainable_mask(params_abs, trainability_policy(config))
  steps_per_epoch, total_steps, _ = schedule_of(config, len(bundle.splits["train"]))
  tx, schedule = optim.make_optimizer(config.optim, params_abs, trainable,
                                      steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  opt_abs = jax.eval_shape(tx.init, params_abs)
  rep = sharding.replicated(mesh)
  state_shardings = TrainState(
      step=rep, params=param_shardings,
      opt_state=sharding.opt_state_shardings(opt_abs, params_abs, param_shardings, mesh),
      model_state=model_state_shardings, rng=rep)

  def init_fn():
    params, model_state = split_variables(nn.meta.unbox(init_variables(params_rng)))
    return TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                      model_state=model_state, rng=dropout_rng)

  jit_init = jax.jit(init_fn, out_shardings=state_shardings)

  def init_state():
    with _Context(mesh, rules):
      state = jit_init()
      return _load_pretrained(config, state, tx, state_shardings)

  abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                jax.eval_shape(init_fn), state_shardings)
  del init_rng
  return Experiment(config, bundle, model, mesh, rules, tx, schedule, trainable, state_shardings,
                    abstract_state, init_state)


def _load_pretrained(config, state: TrainState, tx, shardings: TrainState) -> TrainState:
  """Merges pretrained language-model weights into params["llm"] when the model config asks,
  then re-initialises the optimizer state from the merged params (lookahead keeps a copy)."""
  if not config.model.get("pretrained", ""):
    return state
  from stjax.models import pretrained

  params = pretrained.merge_pretrained(config.model, jax.device_get(state.params))
  params = jax.device_put(params, shardings.params)
  opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
  return state.replace(params=params, opt_state=opt_state)


# ----------------------------------------------------------------------------------------------
# Evaluation.


def compile_predict(exp: Experiment, compute_dtype: str = "float32"):
  """Jitted eval forward: (state, batch) -> predictions in original units, replicated."""
  fn = make_predict_fn(exp.model, exp.bundle.target_scaler, compute_dtype)
  in_batch = {k: exp.batch_shardings[k] for k in ("x", "tod", "dow")}
  return jax.jit(fn, in_shardings=(exp.state_shardings, in_batch),
                 out_shardings=sharding.replicated(exp.mesh))


def compile_eval_step(exp: Experiment, keep_nodes: tuple[int, ...] = ()):
  """Jitted (state, batch) -> metric sums of the batch (and first-horizon traces of `keep_nodes`),
  reduced over the global batch on device, so every host gets the same numbers."""
  from stjax import metrics

  predict = make_predict_fn(exp.model, exp.bundle.target_scaler, exp.config.train.compute_dtype)
  null_rule, nodes = exp.bundle.protocol.null_rule, list(keep_nodes)

  def step(state, batch):
    pred = predict(state, batch)
    out = {"sums": metrics.metric_sums(pred, batch["y"], batch["valid"], null_rule=null_rule)}
    if nodes:
      out["trace"] = {"pred": pred[:, 0, nodes, 0], "true": batch["y"][:, 0, nodes, 0],
                      "index": batch["index"], "valid": batch["valid"]}
    return out

  in_batch = {k: exp.batch_shardings[k] for k in _EVAL_KEYS}
  return jax.jit(step, in_shardings=(exp.state_shardings, in_batch),
                 out_shardings=sharding.replicated(exp.mesh))


_EVAL_KEYS = ("x", "tod", "dow", "y", "index", "valid")
_TRAIN_KEYS = ("x", "tod", "dow", "y")


def eval_batch_size(exp: Experiment) -> int:
  """config.train.eval_batch_size (0 = batch_size) rounded up to a multiple of the batch shards."""
  t = exp.config.train
  size = t.eval_batch_size or t.batch_size
  multiple = math.lcm(exp.batch_shards, jax.process_count())
  return -(-size // multiple) * multiple


def evaluate_split(exp: Experiment, state: TrainState, split: str, eval_step=None,
                   keep_nodes: tuple[int, ...] = ()) -> tuple[dict, dict | None]:
  """Metrics of `state` on one split (streaming; padded rows masked out).

  Returns (metrics as in results.json, trace) where trace holds first-horizon predictions and
  truth [windows, len(keep_nodes)] and the window index [windows] for plots (None without nodes).
  """
  from stjax import metrics
  from stjax.data.pipeline import eval_batches

  eval_step = eval_step or compile_eval_step(exp, keep_nodes)
  meter = metrics.Metrics.for_protocol(exp.bundle.protocol, exp.bundle.spec)
  traces = []
  for batch in eval_batches(exp.bundle.splits[split], eval_batch_size(exp)):
    batch = sharding.put_batch({k: batch[k] for k in _EVAL_KEYS}, exp.batch_shardings)
    with exp.context():
      out = jax.device_get(eval_step(state, batch))
    meter.add(out["sums"])
    if "trace" in out:
      traces.append(out["trace"])
  trace = None
  if traces:
    valid = np.concatenate([t["valid"] for t in traces]).astype(bool)
    trace = {k: np.concatenate([t[k] for t in traces])[valid] for k in ("pred", "true", "index")}
  return meter.compute(), trace


# ----------------------------------------------------------------------------------------------
# Training.


def compile_train_step(exp: Experiment):
  """The experiment's jitted train step (see `jit_train_step`)."""
  cfg = exp.config
  step = make_train_step(exp.model, exp.tx, make_loss_fn(exp.bundle.protocol, exp.bundle.target_scaler),
                         exp.trainable, cfg.train.compute_dtype, exp.schedule)
  return jit_train_step(step, exp.state_shardings, exp.mesh)


def jit_train_step(step, state_shardings: TrainState, mesh):
  """jit with explicit shardings: state as given, batch rows split over (data, fsdp) and nodes
  over `nodes`, measurements replicated; the incoming state's buffers are donated."""
  batch_sh = sharding.batch_shardings(mesh, _TRAIN_KEYS)
  return jax.jit(step, in_shardings=(state_shardings, batch_sh),
                 out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)


@dataclasses.dataclass
class LoopState:
  """The loop's own bookkeeping, saved as checkpoint `meta` so restarts continue it exactly."""

  best_val_mae: float | None = None
  best_step: int | None = None
  evals_since_best: int = 0
  wall_time_s: float = 0.0
  stopped_early: bool = False

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def schedule_of(config, num_train_windows: int) -> tuple[int, int, int]:
  """(steps_per_epoch, total_steps, eval_every)."""
  t = config.train
  steps_per_epoch = num_train_windows // t.batch_size
  if steps_per_epoch == 0:
    raise UserError(f"config.train.batch_size: {t.batch_size} is larger than the {num_train_windows} "
                    "training windows")
  total = t.num_epochs * steps_per_epoch
  if t.max_steps:
    total = min(total, t.max_steps)
  return steps_per_epoch, total, t.eval_every_steps or steps_per_epoch


def _append_jsonl(path: pathlib.Path, record: dict) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


def _truncate_jsonl(path: pathlib.Path, last_step: int) -> None:
  """Drops records logged after `last_step` (written by a run that died before its next save)."""
  if not path.exists():
    return
  lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= last_step]
  ckpt_lib.atomic_write_text(path, "".join(ln + "\n" for ln in lines))


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns results.json data."""
  from stjax import optim
  from stjax.data.pipeline import train_batches

  # --- setup ---
  validate_config(config)
  main = distributed.is_main_process()
  workdir = ckpt_lib.prepare_workdir(workdir, config) if main else pathlib.Path(workdir)
  if jax.process_count() > 1:  # the others open checkpoints only once host 0 has set the workdir up
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("stjax.trainer: workdir ready")
  t = config.train
  # --- data, model init, sharding ---
  exp = build_experiment(config)
  bundle = exp.bundle
  steps_per_epoch, total_steps, eval_every = schedule_of(config, len(bundle.splits["train"]))
  ckpt_every = t.checkpoint_every_steps or eval_every
  train_step = compile_train_step(exp)
  eval_step = compile_eval_step(exp)
  checkpoints = ckpt_lib.Checkpoints(workdir, keep=t.keep_checkpoints)
  iterator = train_batches(bundle.splits["train"], t.batch_size, seed=config.seed,
                           num_epochs=-(-total_steps // steps_per_epoch))
  # --- restore ---
  loop = LoopState()
  if checkpoints.latest_step() is not None:
    state, data_state, meta = checkpoints.restore(exp.abstract_state)
    iterator.set_state(data_state)
    loop = LoopState(**meta)
    if main:
      print(f"Resumed from {checkpoints.root / 'last'} at step {int(state.step)}", flush=True)
  else:
    state = exp.init_state()
  first_step = int(jax.device_get(state.step))
  metrics_path = workdir / "metrics.jsonl"
  writer = None
  if main:
    from tensorboardX import SummaryWriter

    _truncate_jsonl(metrics_path, first_step)
    writer = SummaryWriter(str(workdir / "tensorboard"), purge_step=first_step + 1)
    n_total, n_train = optim.count_params(state.params, exp.trainable)
    print(f"Data: {_describe(bundle)}", flush=True)
    print(f"Model {config.model.name}: {n_total:,} params, {n_train:,} trainable; mesh "
          f"{dict(exp.mesh.shape)}; {total_steps} steps ({steps_per_epoch}/epoch)", flush=True)

  # --- loop ---
  start_time, pending, window = time.time(), None, []
  step = first_step
  last_saved = first_step if first_step else None
  bar = _progress(total_steps, first_step, main and t.progress_bar)

  def flush(pending_item):
    """Host side of a finished step: NaN check, running mean, log line."""
    s, m = pending_item
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    if not math.isfinite(m["loss"]):
      kept = (f"the last good checkpoint (step {checkpoints.latest_step()}) is intact"
              if checkpoints.latest_step() is not None else "no checkpoint was saved yet")
      raise UserError(f"training diverged: loss is {m['loss']} at step {s}; {kept}; lower "
                      "config.optim.learning_rate or enable gradient clipping")
    window.append(m)
    return s, m

  while step < total_steps and not loop.stopped_early:
    host_batch = next(iterator)
    batch = sharding.put_batch({k: host_batch[k] for k in _TRAIN_KEYS}, exp.batch_shardings)
    with exp.context(), jax.transfer_guard("disallow"):
      state, measurements = train_step(state, batch)
    step += 1
    if pending is not None:
      flush(pending)
    pending = (step, measurements)
    bar.update(1)
    do_eval = step % eval_every == 0 or step == total_steps
    do_log = step % t.log_every_steps == 0 or do_eval
    if not (do_eval or do_log or step % ckpt_every == 0):
      continue
    flush(pending)
    pending = None
    record = {"step": step, "train_loss": float(np.mean([m["loss"] for m in window]))}
    record.update({k: float(np.mean([m[k] for m in window])) for k in window[-1] if k != "loss"})
    window.clear()
    elapsed = time.time() - start_time
    record["steps_per_s"] = (step - first_step) / max(elapsed, 1e-9)
    bar.set_postfix(loss=f"{record['train_loss']:.4f}")
    if do_eval:
      val, _ = evaluate_split(exp, state, "val", eval_step)
      record.update({f"val_{k}": v for k, v in val.items() if isinstance(v, (int, float))})
      if loop.best_val_mae is None or val["mae"] < loop.best_val_mae:
        loop.best_val_mae, loop.best_step, loop.evals_since_best = float(val["mae"]), step, 0
        checkpoints.save_best(step, state, {"step": step, "val": val})
      else:
        loop.evals_since_best += 1
        if t.patience and loop.evals_since_best >= t.patience:
          loop.stopped_early = True
          bar.write(f"Early stop at step {step}: no better val MAE for {t.patience} validations "
                    f"(best {loop.best_val_mae:.4f} at step {loop.best_step})")
    if main:
      _append_jsonl(metrics_path, record)
      for k, v in record.items():
        if k != "step":
          writer.add_scalar(k, v, step)
      writer.flush()
    if do_eval or step % ckpt_every == 0 or step == total_steps:
      loop.wall_time_s += time.time() - start_time
      start_time = time.time()
      checkpoints.save(step, state, iterator.get_state(), loop.to_json())
      last_saved = step
  if pending is not None:
    flush(pending)
  bar.close()
  if last_saved != step:  # Unreachable with the save rule above; guards against edits to it.
    raise AssertionError(f"loop ended at step {step} without a checkpoint (last {last_saved})")
  loop.wall_time_s += time.time() - start_time
  if writer is not None:
    writer.close()

  # --- final: the test set, once, with the best checkpoint ---
  return finalize(exp, checkpoints, workdir, steps=step, wall_time_s=loop.wall_time_s)


def _progress(total: int, initial: int, enabled: bool):
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
              smoothing=0.1)


def _describe(bundle) -> str:
  from stjax.data import windows

  return windows.describe(bundle)


# ----------------------------------------------------------------------------------------------
# Final: test once with the best checkpoint, results.json / results.md / plots.


def finalize(exp: Experiment, checkpoints, workdir: pathlib.Path, *, steps: int,
             wall_time_s: float) -> dict:
  """Evaluates the best checkpoint on val and test, compares with the naive baselines, writes
  results.json, results.md and the plots; returns the results dict."""
  from stjax import baselines, optim

  state, meta = checkpoints.restore_best(exp.abstract_state)
  nodes = _plot_nodes(exp.bundle.spec.num_nodes, exp.config.train.plot_nodes)
  val, _ = evaluate_split(exp, state, "val")
  test, trace = evaluate_split(exp, state, "test", keep_nodes=nodes)
  n_total, n_train = optim.count_params(state.params, exp.trainable)
  results = {
      "test": test, "val": val,
      "baselines": {name: r["test"] for name, r in
                    baselines.evaluate_baselines(exp.bundle, splits=("test",)).items()},
      "best_step": int(meta["step"]), "steps": int(steps), "wall_time_s": float(wall_time_s),
      "params_total": int(n_total), "params_trainable": int(n_train),
  }
  table = results_table(results, exp.bundle.protocol)
  if distributed.is_main_process():
    print(table, flush=True)
    ckpt_lib.atomic_write_text(workdir / "results.json", json.dumps(results, indent=2) + "\n")
    ckpt_lib.atomic_write_text(workdir / "results.md", results_markdown(results, exp, table))
    _plots(workdir, trace, nodes, exp.bundle.protocol.null_rule)
  return results


def _plot_nodes(num_nodes: int, count: int) -> tuple[int, ...]:
  count = max(0, min(count, num_nodes))
  return tuple(int(i) for i in np.linspace(0, num_nodes - 1, count).round()) if count else ()


def results_table(results: dict, protocol) -> str:
  """Per-horizon MAE/RMSE/MAPE of the model next to the naive baselines, as a text table."""
  rows = [("model", results["test"])] + list(results["baselines"].items())
  horizons = [h for h in protocol.report_horizons if 1 <= h <= len(results["test"]["per_horizon"])]
  cols = [("avg", lambda r, k: r[k])] + [
      (f"h{h}", lambda r, k, h=h: r["per_horizon"][h - 1][k]) for h in horizons]
  lines = []
  for metric in ("mae", "rmse", "mape"):
    head = f"{metric.upper():<20}" + "".join(f"{c:>9}" for c, _ in cols)
    lines.append(head)
    for name, r in rows:
      lines.append(f"{name:<20}" + "".join(f"{get(r, metric):9.4f}" for _, get in cols))
  return "\n".join(lines)


def results_markdown(results: dict, exp: Experiment, table: str) -> str:
  t = results["test"]
  lines = [f"# Results: {exp.config.model.name} on {exp.bundle.dataset.name} ({exp.bundle.protocol.name} protocol)",
           "", "Test set, best validation checkpoint (step "
           f"{results['best_step']} of {results['steps']}; {results['wall_time_s']:.0f} s; "
           f"{results['params_trainable']:,} of {results['params_total']:,} params trainable).", "",
           "| model | MAE | RMSE | MAPE | WAPE |", "|---|---|---|---|---|"]
  for name, r in [("model", t)] + list(results["baselines"].items()):
    lines.append(f"| {name} | {r['mae']:.4f} | {r['rmse']:.4f} | {r['mape']:.4f} | {r['wape']:.4f} |")
  if t.get("per_channel"):
    lines += ["", "| channel | MAE | RMSE | MAPE | WAPE |", "|---|---|---|---|---|"]
    for ch, r in t["per_channel"].items():
      lines.append(f"| {ch} | {r['mae']:.4f} | {r['rmse']:.4f} | {r['mape']:.4f} | {r['wape']:.4f} |")
  lines += ["", "Per horizon:", "", "```", table, "```", "",
            f"Validation MAE of the best checkpoint: {results['val']['mae']:.4f}", ""]
  return "\n".join(lines)


def _plots(workdir: pathlib.Path, trace: dict | None, nodes: tuple[int, ...], null_rule: str) -> None:
  """predictions.png (first-horizon forecasts vs truth of a few test nodes; readings the protocol
  does not score are left out) and training_curves.png (train loss and val MAE per step)."""
  import matplotlib

  from stjax.metrics import null_mask

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  if trace is not None and len(nodes):
    order = np.argsort(trace["index"])
    true = np.where(np.asarray(null_mask(trace["true"], null_rule)), trace["true"], np.nan)
    fig, axes = plt.subplots(len(nodes), 1, figsize=(12, 2.2 * len(nodes)), sharex=True, squeeze=False)
    for i, node in enumerate(nodes):
      ax = axes[i, 0]
      ax.plot(trace["index"][order], true[order, i], lw=0.8, label="truth")
      ax.plot(trace["index"][order], trace["pred"][order, i], lw=0.8, label="prediction (+1 step)")
      ax.set_ylabel(f"node {node}")
    axes[0, 0].legend(loc="upper right")
    axes[-1, 0].set_xlabel("test window")
    fig.tight_layout()
    fig.savefig(workdir / "predictions.png", dpi=100)
    plt.close(fig)
  records = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines() if ln.strip()] \
      if (workdir / "metrics.jsonl").exists() else []
  if records:
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([r["step"] for r in records], [r["train_loss"] for r in records], label="train loss")
    val = [r for r in records if "val_mae" in r]
    ax.plot([r["step"] for r in val], [r["val_mae"] for r in val], "o-", label="val MAE")
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(workdir / "training_curves.png", dpi=100)
    plt.close(fig)
