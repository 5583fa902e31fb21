"""Optimizers, learning-rate schedules and trainability masks (freezing as data).

    mask = trainable_mask(params, "pfa(2)")          # or config.optim, or [(regex, bool), ...]
    tx, schedule = make_optimizer(config.optim, params, mask, steps_per_epoch=..., total_steps=...)

Frozen leaves go through `optax.set_to_zero()` inside `optax.multi_transform`, so they never change
and carry no optimizer state. The language model is the subtree `params["llm"]` when present (stjax
models) or the whole tree (a bare GPT2); named policies act on it, everything outside `llm` trains.

`python -m stjax.train.optim --policy='pfa(2)' --llm-layers=6` prints the parameter counts of full-size
GPT-2 under a policy (see docs/gpt2.md for the hand count).
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

from stjax.errors import UserError
from stjax.models.backbones.config import LLM_KEY

TRAIN, FREEZE = "train", "freeze"


def default_optim_config() -> ml_collections.ConfigDict:
  """`config.optim`, every field documented. Configs start from this and override."""
  c = ml_collections.ConfigDict()
  c.name = "adamw"  # adamw | adam (L2 via weight_decay, as torch.optim.Adam) | ranger (ST-LLM).
  c.learning_rate = 1e-3  # peak learning rate.
  c.b1 = 0.9  # first-moment decay (ST-LLM's ranger: 0.95).
  c.b2 = 0.999  # second-moment decay.
  c.eps = 1e-8  # denominator epsilon (ST-LLM's ranger: 1e-5).
  c.weight_decay = 0.0  # adamw/ranger: decoupled p -= lr*wd*p; adam: L2 added to the gradient.
  c.grad_clip_norm = 0.0  # clip the global norm of the trainable gradients; 0 = no clipping.
  c.schedule = "constant"  # constant | warmup_cosine | multistep.
  c.warmup_steps = 0  # warmup_cosine: linear warmup from 0 over this many steps.
  c.min_lr_ratio = 0.0  # warmup_cosine: final learning rate = min_lr_ratio * learning_rate.
  c.milestones = ()  # multistep: epochs after which lr *= decay_factor (STH-SepNet: (5, 20, 40, 70)).
  c.decay_factor = 0.3  # multistep: multiplicative decay at each milestone.
  c.lookahead_sync_period = 6  # ranger: lookahead k (sync every k steps).
  c.lookahead_slow_step = 0.5  # ranger: lookahead alpha (slow weights step size).
  c.radam_threshold = 5.0  # ranger: RAdam SMA threshold below which the update is un-adapted.
  c.trainable = "full"  # full | frozen | pfa(U) | lora | list of (path regex, bool), first match wins.
  return c


# ----------------------------------------------------------------------------------------------
# Trainability masks.


def _path_str(path) -> str:
  parts = []
  for key in path:
    if isinstance(key, jax.tree_util.DictKey):
      parts.append(str(key.key))
    elif isinstance(key, jax.tree_util.SequenceKey):
      parts.append(str(key.idx))
  return "/".join(parts)


def _has_llm(params: Any) -> bool:
  return hasattr(params, "keys") and LLM_KEY in params.keys()


def _llm_layers(params: Any) -> int:
  llm = params[LLM_KEY] if _has_llm(params) else params
  return sum(1 for k in llm.keys() if re.fullmatch(r"(h|layers|layer)_\d+", str(k)))  # GPT-2 | Llama | BERT


_FROZEN_PRETRAINED = re.compile(
  r"(^|/)(attn/(c_attn|c_proj)|mlp/(c_fc|c_proj)"
  r"|self_attn/[qkvo]_proj|mlp/(gate|up|down)_proj"
  r"|attention/self/(query|key|value)|attention/output/dense|intermediate/dense|output/dense)/(kernel|bias)$"
)  # the pretrained projections of a block: GPT-2 | Llama | BERT
_ATTENTION = ("attn/", "self_attn/", "attention/")  # a block's attention: GPT-2 | Llama | BERT
_TOKEN_TABLES = ("wte/", "embed_tokens/", "embeddings/word_embeddings/")  # GPT-2 | Llama | BERT


def _policy_fn(policy: str, params: Any):
  """Returns f(path inside the LLM) -> trainable, for a named policy."""
  policy = policy.strip()
  if policy == "full":
    return lambda p: True
  if policy == "frozen":
    return lambda p: False
  if policy == "lora":
    return lambda p: p.endswith("/lora_a") or p.endswith("/lora_b")
  m = re.fullmatch(r"pfa\(\s*(\d+)\s*\)", policy)
  if m:
    unfrozen, layers = int(m.group(1)), _llm_layers(params)
    if unfrozen > layers:
      raise UserError(
        f"config.optim.trainable: pfa({unfrozen}) needs at least {unfrozen} LLM blocks, "
        f"the model has {layers}"
      )
    first_unfrozen = layers - unfrozen

    def pfa(p: str) -> bool:
      if p.startswith(_TOKEN_TABLES):
        return False
      block = re.match(r"(?:h|layers|layer)_(\d+)/", p)
      if block and _FROZEN_PRETRAINED.search(p):
        # Pretrained attention trains only in the last U blocks; the pretrained MLP never does.
        return p[block.end() :].startswith(_ATTENTION) and int(block.group(1)) >= first_unfrozen
      # LayerNorms, positions (wpe, BERT's position and token-type tables), ln_f, new modules
      # (extra_ffn, LoRA adapters, SE params)
      return True

    return pfa
  raise UserError(
    f"config.optim.trainable: unknown policy {policy!r}; use full, frozen, pfa(U), lora "
    "or a list of (path regex, bool) rules"
  )


def trainable_mask(params: Any, policy: Any) -> Any:
  """A tree of bools like `params`: True = the leaf trains.

  Args:
    params: param tree (arrays or ShapeDtypeStructs), with or without an `llm` subtree.
    policy: a named policy ("full", "frozen", "pfa(U)", "lora"), a sequence of (regex, bool) rules
      matched with re.search against full paths like "llm/h_0/attn/c_attn/kernel" (first match
      wins, unmatched leaves train), or a config with a `trainable` field holding either.
  """
  if hasattr(policy, "trainable"):
    policy = policy.trainable
  if isinstance(policy, str):
    in_llm = _policy_fn(policy, params)
    has_llm = _has_llm(params)
    if policy.strip() == "lora":
      leaves = jax.tree_util.tree_leaves_with_path(params[LLM_KEY] if has_llm else params)
      if not any(in_llm(_path_str(p)) for p, _ in leaves):
        raise UserError(
          "config.optim.trainable: policy 'lora' but the LLM has no lora_a/lora_b "
          "(set the model's lora_rank > 0)"
        )

    def leaf(path, _):
      p = _path_str(path)
      if has_llm:
        if not p.startswith(LLM_KEY + "/"):
          return True
        p = p[len(LLM_KEY) + 1 :]
      return in_llm(p)

    return jax.tree_util.tree_map_with_path(leaf, params)
  try:
    rules = [(re.compile(r), bool(t)) for r, t in policy]
  except (TypeError, ValueError, re.error) as e:
    raise UserError(f"config.optim.trainable: expected a policy name or (regex, bool) pairs ({e})") from None

  def by_rules(path, _):
    p = _path_str(path)
    return next((t for r, t in rules if r.search(p)), True)

  return jax.tree_util.tree_map_with_path(by_rules, params)


def store_frozen(params: Any, mask: Any, dtype: str) -> Any:
  """params with the floating leaves that `mask` freezes cast to `dtype` (their storage dtype:
  "bfloat16" halves them, and frozen leaves carry no optimizer state, so no float32 copy remains)."""
  if dtype == "float32":
    return params
  target = jnp.dtype(dtype)
  return jax.tree.map(
    lambda p, t: p if t or not jnp.issubdtype(p.dtype, jnp.floating) else p.astype(target), params, mask
  )


def count_params(params: Any, mask: Any) -> tuple[int, int]:
  """(total, trainable) numbers of scalars."""
  sizes = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x: int(x.size), params))
  flags = jax.tree_util.tree_leaves(mask)
  return sum(sizes), sum(s for s, f in zip(sizes, flags) if f)


# ----------------------------------------------------------------------------------------------
# Transformations.


def centralize_gradients() -> optax.GradientTransformation:
  """Gradient centralisation as Ranger applies it to torch tensors with dim > 1.

  Torch subtracts the mean over all axes but the leading (output) one. Mapped to stjax layouts:
  GPT-2 Conv1D kernels inside `llm` and embedding tables share torch's layout (mean over all but the
  first axis); Flax Dense/Conv kernels elsewhere are [..., in, out] (mean over all but the last).
  """

  def update(updates, state, params=None):
    del params

    def gc(path, g):
      if g.ndim < 2:
        return g
      p = _path_str(path)
      torch_layout = p.startswith(LLM_KEY + "/") or not p.endswith("kernel")
      axes = tuple(range(1, g.ndim)) if torch_layout else tuple(range(g.ndim - 1))
      return g - jnp.mean(g, axis=axes, keepdims=True)

    return jax.tree_util.tree_map_with_path(gc, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class LookaheadState(NamedTuple):
  inner: Any
  slow: Any
  count: jax.Array


def lookahead(
  inner: optax.GradientTransformation, sync_period: int, slow_step_size: float
) -> optax.GradientTransformation:
  """Lookahead with the slow weights in the optimizer state (params stay a plain tree).

  Every `sync_period` steps: slow += alpha * (fast - slow); fast = slow (as Ranger does).
  """

  def init(params):
    return LookaheadState(
      inner.init(params), jax.tree_util.tree_map(jnp.asarray, params), jnp.zeros((), jnp.int32)
    )

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("lookahead needs params")
    inner_updates, inner_state = inner.update(updates, state.inner, params)
    count = state.count + 1
    sync = count % sync_period == 0
    fast = optax.apply_updates(params, inner_updates)
    slow = jax.tree_util.tree_map(
      lambda s, f: jnp.where(sync, s + slow_step_size * (f - s), s), state.slow, fast
    )
    new_updates = jax.tree_util.tree_map(
      lambda u, s, p: jnp.where(sync, s - p, u), inner_updates, slow, params
    )
    return new_updates, LookaheadState(inner_state, slow, count)

  return optax.GradientTransformation(init, update)


def _radam_rho(count: jax.Array, b2: float) -> jax.Array:
  """RAdam's rho_t = rho_inf - 2 t b2^t / (1 - b2^t), accurate in float32.

  The direct form cancels two ~2/(1-b2) terms: in float32 it is off by up to 0.04 in the first
  steps (optax's scale_by_radam), enough to move the rectifier ~1 % and the rho > 5 switch. Here
  2t b2^t / (1 - b2^t) = (2/c)(1 - f(y)), y = c t, c = -log b2, f(y) = 1 - y / expm1(y), with f's
  Taylor series (Bernoulli numbers) where y is small, so only well-conditioned terms are added.
  """
  c = -math.log(b2)
  y = count.astype(jnp.float32) * c
  series = y / 2 - y**2 / 12 + y**4 / 720 - y**6 / 30240 + y**8 / 1209600
  f = jnp.where(y < 0.5, series, 1.0 - y / jnp.expm1(jnp.maximum(y, 0.5)))
  rho_inf = 2.0 / (1.0 - b2) - 1.0
  return (rho_inf - 2.0 / c) + (2.0 / c) * f


def scale_by_ranger_radam(b1: float, b2: float, eps: float, threshold: float) -> optax.GradientTransformation:
  """RAdam exactly as ST-LLM's Ranger (and torch.optim.RAdam) computes it.

  m, v: Adam moments of the (centralised) gradient; rho_t as `_radam_rho`. Where rho_t > threshold
  (strictly): step = sqrt((1-b2^t) (rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t)) / (1-b1^t)
  and the update is step * m / (sqrt(v) + eps) - eps is added to the UNcorrected sqrt(v); optax's
  scale_by_radam adds it to the corrected one (eps / sqrt(1-b2^t) apart: 13x eps at step 6) and
  switches at rho_t >= threshold. Otherwise the update is m / (1-b1^t) (SGD with momentum).
  """
  rho_inf = 2.0 / (1.0 - b2) - 1.0

  def init(params):
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return optax.ScaleByAdamState(jnp.zeros([], jnp.int32), zeros, zeros)

  def update(updates, state, params=None):
    del params
    mu = jax.tree_util.tree_map(lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
    nu = jax.tree_util.tree_map(lambda g, v: b2 * v + (1 - b2) * g * g, updates, state.nu)
    count = state.count + 1
    t = count.astype(jnp.float32)
    rho = _radam_rho(count, b2)
    bc1, bc2 = -jnp.expm1(t * math.log(b1)), -jnp.expm1(t * math.log(b2))  # 1 - b^t without cancellation
    rect = jnp.sqrt(
      jnp.maximum(bc2 * (rho - 4) / (rho_inf - 4) * (rho - 2) / rho * rho_inf / (rho_inf - 2), 0.0)
    )
    adapt = rho > threshold
    out = jax.tree_util.tree_map(
      lambda m, v: jnp.where(adapt, (rect / bc1) * m / (jnp.sqrt(v) + eps), m / bc1).astype(m.dtype), mu, nu
    )
    return out, optax.ScaleByAdamState(count, mu, nu)

  return optax.GradientTransformation(init, update)


def make_schedule(cfg, steps_per_epoch: int | None = None, total_steps: int | None = None):
  """The learning-rate schedule named by `cfg.schedule` (step -> lr)."""
  lr = float(cfg.learning_rate)
  if cfg.schedule == "constant":
    return optax.constant_schedule(lr)
  if cfg.schedule == "warmup_cosine":
    if not total_steps:
      raise ValueError("make_schedule: warmup_cosine needs total_steps")
    total, warmup = max(int(total_steps), 1), int(cfg.warmup_steps)
    if warmup < 0:
      raise UserError(f"config.optim.warmup_steps: must be >= 0, got {warmup}")
    if warmup >= total:  # e.g. a short smoke run of a long config: keep one step of decay
      print(
        f"stjax: note: config.optim.warmup_steps: {warmup} warmup steps do not fit the run's {total} "
        f"steps; warming up over {total - 1}",
        file=sys.stderr,
        flush=True,
      )
      warmup = total - 1
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total, end_value=lr * float(cfg.min_lr_ratio))
  if cfg.schedule == "multistep":
    if not steps_per_epoch:
      raise ValueError("make_schedule: multistep needs steps_per_epoch")
    boundaries = {}
    for m in cfg.milestones:
      step = int(m) * int(steps_per_epoch)
      boundaries[step] = boundaries.get(step, 1.0) * float(cfg.decay_factor)
    return optax.piecewise_constant_schedule(lr, boundaries)
  raise UserError(
    f"config.optim.schedule: unknown schedule {cfg.schedule!r}; use constant, warmup_cosine or multistep"
  )


def _base_optimizer(cfg, schedule) -> optax.GradientTransformation:
  wd = float(cfg.weight_decay)
  if cfg.name == "adamw":
    return optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd)
  if cfg.name == "adam":
    adam = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    return optax.chain(optax.add_decayed_weights(wd), adam) if wd else adam
  if cfg.name == "ranger":
    fast = optax.chain(
      centralize_gradients(),
      scale_by_ranger_radam(float(cfg.b1), float(cfg.b2), float(cfg.eps), float(cfg.radam_threshold)),
      optax.add_decayed_weights(wd),
      optax.scale_by_learning_rate(schedule),
    )
    return lookahead(fast, int(cfg.lookahead_sync_period), float(cfg.lookahead_slow_step))
  raise UserError(f"config.optim.name: unknown optimizer {cfg.name!r}; use adamw, adam or ranger")


def make_optimizer(
  cfg, params: Any, mask: Any, *, steps_per_epoch: int | None = None, total_steps: int | None = None
) -> tuple[optax.GradientTransformation, Any]:
  """(optimizer, schedule) for `config.optim`: clipping + optimizer on trainable leaves only.

  Frozen leaves (mask False) get `set_to_zero` and no state. Clipping uses the global norm of the
  trainable gradients (torch's clip_grad_norm_ over parameters that have gradients).
  """
  del params  # the mask carries the structure
  schedule = make_schedule(cfg, steps_per_epoch, total_steps)
  parts = []
  if cfg.grad_clip_norm and float(cfg.grad_clip_norm) > 0:
    parts.append(optax.clip_by_global_norm(float(cfg.grad_clip_norm)))
  parts.append(_base_optimizer(cfg, schedule))
  train = optax.chain(*parts)
  labels = jax.tree_util.tree_map(lambda t: TRAIN if t else FREEZE, mask)
  tx = optax.multi_transform({TRAIN: train, FREEZE: optax.set_to_zero()}, labels)
  return tx, schedule


# ----------------------------------------------------------------------------------------------
# Command line: trainable counts of full-size GPT-2 under a policy.


def _main(argv: Sequence[str] | None = None) -> int:
  import argparse

  import flax.linen as nn

  from stjax.models.backbones.gpt2 import GPT2, GPT2Config

  parser = argparse.ArgumentParser(
    prog="python -m stjax.train.optim",
    description="parameter counts of GPT-2 (124M) under a trainability policy",
  )
  parser.add_argument("--policy", default="pfa(2)", help="full | frozen | pfa(U) | lora")
  parser.add_argument("--llm-layers", type=int, default=6, help="GPT-2 blocks kept (truncation)")
  parser.add_argument("--lora-rank", type=int, default=0, help="LoRA rank on all projections (0 = none)")
  args = parser.parse_args(argv)
  if not 1 <= args.llm_layers <= 12:
    raise UserError(f"--llm-layers: must be in 1..12 (GPT-2 has 12 blocks), got {args.llm_layers}")
  cfg = GPT2Config(n_layer=args.llm_layers, lora_rank=args.lora_rank)
  shapes = jax.eval_shape(lambda: GPT2(cfg).init(jax.random.key(0), jnp.zeros((1, 4, cfg.n_embd))))
  params = nn.meta.unbox(shapes)["params"]
  mask = trainable_mask(params, args.policy)
  total, trainable = count_params(params, mask)
  print(f"GPT-2 (124M) truncated to {args.llm_layers} blocks, policy {args.policy}")
  print(f"total parameters:     {total:,}")
  print(f"trainable parameters: {trainable:,} ({100.0 * trainable / total:.2f}%)")
  for name in sorted(params):
    sub_total, sub_train = count_params(params[name], mask[name])
    print(f"  {name:6s} {sub_train:>12,} / {sub_total:,}")
  return 0


if __name__ == "__main__":
  import sys

  from stjax.errors import cli_entry

  sys.exit(cli_entry(_main)())
