"""Device mesh, logical axis rules and shardings for params, state and batches.

The mesh has four named axes, sized from `config.mesh` (docs/scaling.md: layouts and when to
use each):

  data    batch parallelism (params replicated across it),
  fsdp    batch parallelism that also shards parameters and optimizer state (ZeRO-3 style),
  nodes   graph/token parallelism: the node axis of every batch (and so the N*P token sequence
          of ST-LINK, whose tokens are node-major) is split across it, for graphs too large
          for one device's activations,
  tensor  model parallelism inside a layer (heads, MLP hidden units).

Models name the axes of their parameters and activations with logical names
(`nn.with_logical_partitioning(init, ("embed", "mlp"))`); `config.mesh.rules` maps each logical
name to a mesh axis (or None = replicated), so changing the parallelism is a config edit. Every
logical name a model uses must have a rule (a missing one is a UserError, never a silent
replication). A parameter without annotations and with at least `config.mesh.min_shard_size`
elements is FSDP-sharded on its largest divisible dimension; smaller ones are replicated.
Batches are split over `data` and `fsdp` together (rows) and over `nodes` (node axis of x, y).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stjax.errors import UserError

# Outer to inner: the inner axes get the fastest links (devices of one host / one ICI ring).
MESH_AXES = ("data", "fsdp", "nodes", "tensor")
BATCH_AXES = ("data", "fsdp")
PARAM_AXES = ("fsdp", "tensor")  # mesh axes that split parameters
# Batch keys with a node axis (axis 2 of [B, T, N, C]); it is split over the `nodes` mesh axis.
NODE_KEYS = ("x", "y")
NODE_AXIS = 2

# Logical axis name -> mesh axis. These are all the names stjax models use (GPT-2 and Llama
# parameters, activation constraints); ST-LINK, ST-LLM and STH-SepNet own layers carry no
# annotations (their large leaves, e.g. STH-SepNet's prototype map, are sharded by size).
DEFAULT_RULES = (
  ("batch", BATCH_AXES),  # activations' batch axis: data x fsdp, like the input rows.
  ("nodes", "nodes"),  # activations' node / token axis: graph parallelism.
  ("embed", "fsdp"),  # model width d on params: FSDP (gathered per layer in the step).
  ("mlp", "tensor"),  # MLP hidden units (GPT-2 c_fc/c_proj, Llama gate/up/down).
  ("heads", "tensor"),  # attention heads x head dim (q_proj, out-projection input).
  ("qkv", "tensor"),  # fused q|k|v output columns of GPT-2's c_attn.
  ("kv_heads", "tensor"),  # Llama's grouped K/V heads x head dim (8 x 64 in Llama 3.2 1B).
  ("vocab", "tensor"),  # token table rows (GPT-2 wte, Llama embed_tokens).
  ("positions", None),  # GPT-2's learned position table rows (1024: small).
)


def default_mesh_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.data = -1  # data-parallel axis size; -1 = all devices left over.
  c.fsdp = 1  # parameter-sharding data-parallel axis size (-1 = fill).
  c.nodes = 1  # graph/token-parallel axis size: splits the node axis of batches (-1 = fill).
  c.tensor = 1  # tensor-parallel axis size (-1 = fill).
  c.rules = DEFAULT_RULES  # logical axis name -> mesh axis (table in docs/scaling.md).
  c.min_shard_size = 1 << 20  # params with >= this many elements must be sharded when
  #                             fsdp * tensor > 1 (unannotated ones are FSDP-sharded by size).
  return c


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, ...]:
  """Axis sizes in MESH_AXES order, with at most one -1 filled from `num_devices`."""
  sizes = [int(mesh_config.get(a, 1)) for a in MESH_AXES]
  shown = dict(zip(MESH_AXES, sizes))
  fill = [a for a, s in zip(MESH_AXES, sizes) if s == -1]
  if len(fill) > 1:
    raise UserError(f"config.mesh: at most one axis may be -1 (fill), got {', '.join(fill)}")
  if any(s == 0 or s < -1 for s in sizes):
    raise UserError(f"config.mesh: axis sizes must be positive or -1, got {shown}")
  fixed = math.prod(s for s in sizes if s != -1)
  if fill:
    if num_devices % fixed:
      raise UserError(
        f"config.mesh: {num_devices} devices are not divisible by the fixed axes (product {fixed}) of {shown}"
      )
    sizes[sizes.index(-1)] = num_devices // fixed
  elif fixed != num_devices:
    raise UserError(
      f"config.mesh: {shown} needs {fixed} devices, but {num_devices} are available (use -1 to fill an axis)"
    )
  return tuple(sizes)


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The (data, fsdp, nodes, tensor) mesh over `devices` (default: all devices of all hosts).

  Devices are laid out by `mesh_utils.create_device_mesh` (physical topology on TPU/GPU); where
  it cannot (CPU), in `jax.devices()` order, which is process-major, so the outer axes (data,
  fsdp) span hosts and each host holds a contiguous block of batch rows.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  try:
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


def logical_rules(mesh_config) -> tuple[tuple[str, Any], ...]:
  """`config.mesh.rules` as a tuple of (logical name, mesh axis | tuple | None), validated."""
  rules = []
  for entry in mesh_config.rules:
    if len(entry) != 2:
      raise UserError(f"config.mesh.rules: each rule is (logical_name, mesh_axis), got {entry!r}")
    name, target = entry
    targets = (target,) if isinstance(target, str) else tuple(target or ())
    bad = [t for t in targets if t not in MESH_AXES]
    if bad:
      raise UserError(
        f"config.mesh.rules: rule for {name!r} names unknown mesh axis {bad[0]!r}; "
        f"mesh axes are {', '.join(MESH_AXES)}"
      )
    rules.append((str(name), tuple(target) if isinstance(target, (list, tuple)) else target))
  if "batch" not in {n for n, _ in rules}:
    raise UserError("config.mesh.rules: no rule for 'batch' (use ('batch', ('data', 'fsdp')))")
  return tuple(rules)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def batch_shardings(mesh: Mesh, keys: Sequence[str]) -> dict[str, NamedSharding]:
  """Per batch key: rows over data x fsdp; the node axis of `x` and `y` also over `nodes`."""
  node_split = NamedSharding(mesh, P(BATCH_AXES, None, "nodes"))
  return {k: node_split if k in NODE_KEYS else batch_sharding(mesh) for k in keys}


def tree_shardings(abstract_tree, mesh: Mesh, rules, min_shard_size: int = 0) -> Any:
  """NamedShardings for a tree from `jax.eval_shape(model.init, ...)` (boxed leaves allowed).

  Leaves boxed by `nn.with_logical_partitioning` get their logical axes mapped through `rules`
  (a name without a rule is a UserError); a dimension the mapped axes do not divide stays whole
  (GPT-2's 50257-row token table over `tensor`), and a leaf left whole in every dimension is
  treated like a plain one. Plain leaves with >= `min_shard_size` elements
  (0 = never) are split on their largest dimension divisible by the parameter axes (fsdp x
  tensor, else fsdp, else tensor, whichever are > 1); others are replicated. The result matches
  the UNBOXED tree (`nn.meta.unbox`).
  """
  known = {name for name, _ in rules}
  boxed = lambda x: isinstance(x, nn.Partitioned)  # noqa: E731

  def one(path, leaf):
    if boxed(leaf):
      missing = [a for a in leaf.names if isinstance(a, str) and a not in known]
      if missing:
        raise UserError(
          f"config.mesh.rules: no rule for logical axis {missing[0]!r} (used by "
          f"{jax.tree_util.keystr(path)}); add ({missing[0]!r}, mesh_axis or None)"
        )
      shape = leaf.unbox(apply_constraint=False).shape
      spec = [
        axes if axes is None or dim % _size(mesh, axes) == 0 else None
        for dim, axes in zip(shape, nn.logical_to_mesh_axes(leaf.names, rules))
      ]
      sharding = NamedSharding(mesh, P(*spec))
      if all(a is None for a in spec):  # e.g. GPT-2's 50257-row table on tensor only
        sharding = _by_size(shape, mesh, min_shard_size)
    else:
      shape = tuple(getattr(leaf, "shape", ()))
      sharding = _by_size(shape, mesh, min_shard_size)
    _check_divisible(path, shape, sharding)
    return sharding

  return jax.tree_util.tree_map_with_path(one, abstract_tree, is_leaf=boxed)


def _size(mesh: Mesh, axes) -> int:
  return math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))


def _by_size(shape: tuple[int, ...], mesh: Mesh, min_shard_size: int) -> NamedSharding:
  """Unannotated leaf: its largest dimension divisible by the parameter axes, if big enough."""
  if not min_shard_size or math.prod(shape) < min_shard_size:
    return replicated(mesh)
  active = tuple(a for a in PARAM_AXES if mesh.shape[a] > 1)
  for axes in (active,) + tuple((a,) for a in active if len(active) > 1):
    size = math.prod(mesh.shape[a] for a in axes)
    dims = [d for d in np.argsort(shape)[::-1] if shape[d] % size == 0]
    if axes and dims:
      spec = [None] * len(shape)
      spec[dims[0]] = axes if len(axes) > 1 else axes[0]
      return NamedSharding(mesh, P(*spec))
  return replicated(mesh)


def assert_sharded(params, shardings, min_size: int) -> None:
  """UserError unless every leaf of `params` with >= `min_size` elements is split over devices.

  The trainer calls it at init when the mesh shards parameters (fsdp x tensor > 1): a rule
  table that maps a big parameter's axes to None (or to axes of size 1) would otherwise silently
  replicate it on every device.
  """
  unsharded = []
  for (path, leaf), sharding in zip(
    jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(shardings)
  ):
    shape = tuple(leaf.shape)
    if math.prod(shape) >= min_size and tuple(sharding.shard_shape(shape)) == shape:
      unsharded.append(f"{jax.tree_util.keystr(path)} {shape}")
  if unsharded:
    mesh = jax.tree_util.tree_leaves(shardings)[0].mesh
    shown = "; ".join(unsharded[:4]) + (f" (+{len(unsharded) - 4} more)" if len(unsharded) > 4 else "")
    raise UserError(
      f"config.mesh: the mesh {dict(mesh.shape)} shards parameters but "
      f"{len(unsharded)} with >= {min_size} elements would be replicated on every "
      f"device: {shown}; map their logical axes to fsdp/tensor in config.mesh.rules "
      "or raise config.mesh.min_shard_size"
    )


def unbox_abstract(tree) -> Any:
  """Strips logical-partitioning boxes from an abstract tree (no sharding constraints applied)."""
  return jax.tree.map(
    lambda x: x.unbox(apply_constraint=False) if isinstance(x, nn.Partitioned) else x,
    tree,
    is_leaf=lambda x: isinstance(x, nn.Partitioned),
  )


def _check_divisible(path, shape, sharding: NamedSharding) -> None:
  for dim, axes in zip(shape, sharding.spec):
    if axes is None:
      continue
    size = math.prod(sharding.mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
    if dim % size:
      raise UserError(
        f"config.mesh: parameter {jax.tree_util.keystr(path)} of shape {shape} cannot be "
        f"split {size} ways over {axes!r}; change config.mesh or config.mesh.rules"
      )


def opt_state_shardings(abstract_opt_state, abstract_params, param_shardings, mesh: Mesh) -> Any:
  """Optimizer-state shardings: a leaf whose tree path ends with a parameter's path and has
  that parameter's shape (Adam moments, lookahead slow weights) follows the parameter's
  sharding; everything else (step counts, scalars) is replicated."""
  by_path = {}
  for (path, leaf), sharding in zip(
    jax.tree_util.tree_leaves_with_path(abstract_params), jax.tree_util.tree_leaves(param_shardings)
  ):
    by_path[_path_key(path)] = (tuple(leaf.shape), sharding)
  lengths = sorted({len(k) for k in by_path}, reverse=True)

  def pick(path, leaf):
    key = _path_key(path)
    for n in lengths:
      hit = by_path.get(key[-n:]) if len(key) >= n else None
      if hit is not None and hit[0] == tuple(getattr(leaf, "shape", ())):
        return hit[1]
    return replicated(mesh)

  return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)


def _path_key(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def put_batch(
  batch: dict[str, np.ndarray], shardings: NamedSharding | dict[str, NamedSharding], *, whole: bool = False
) -> dict[str, jax.Array]:
  """Host batch -> global arrays on the mesh (`jax.make_array_from_process_local_data`).

  By default (training) host h of P passes rows [h B/P, (h+1) B/P) of the global batch B, as
  `stjax.data.pipeline` gives them, with every node; the global batch is their concatenation in
  process order. The mesh must give each host exactly that block of rows (true when data/fsdp
  are the host-spanning outer axes); otherwise this is a UserError, not a silent reorder. With
  `whole=True` every host passes the same whole global batch and keeps what its devices hold.
  `shardings` is one sharding for every key or one per key (`batch_shardings`).
  """
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    sharding = shardings[k] if isinstance(shardings, dict) else shardings
    global_shape = v.shape if whole else (v.shape[0] * jax.process_count(),) + v.shape[1:]
    _check_batch_layout(k, tuple(global_shape), sharding, whole)
    out[k] = jax.make_array_from_process_local_data(sharding, v, global_shape)
  return out


@functools.lru_cache(maxsize=256)
def _check_batch_layout(
  key: str, global_shape: tuple[int, ...], sharding: NamedSharding, whole: bool
) -> None:
  """UserError unless the batch splits evenly and this host holds its own rows (checked once per
  key, shape and sharding: every training step puts batches of the same layout)."""
  for dim, axes in enumerate(sharding.spec):
    size = math.prod(sharding.mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
    if global_shape[dim] % size:
      field = "config.mesh.nodes" if dim == NODE_AXIS else "config.train.batch_size"
      raise UserError(
        f"{field}: batch['{key}'] axis {dim} of size {global_shape[dim]} cannot be "
        f"split {size} ways over {axes!r}"
      )
  if whole or jax.process_count() == 1:
    return
  rows = global_shape[0] // jax.process_count()
  want = (jax.process_index() * rows, (jax.process_index() + 1) * rows)
  held = [
    idx[0].indices(global_shape[0])[:2]
    for idx in sharding.addressable_devices_indices_map(tuple(global_shape)).values()
  ]
  if (min(lo for lo, _ in held), max(hi for _, hi in held)) != want:
    raise UserError(
      f"config.mesh: {dict(sharding.mesh.shape)} does not give host "
      f"{jax.process_index()} batch rows {want[0]}:{want[1]} of {global_shape[0]} "
      "(an axis inside a host spans hosts); make data/fsdp the axes that span hosts, "
      "e.g. data = number of hosts or more"
    )
