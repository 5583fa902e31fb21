"""Device mesh, logical axis rules and shardings for params, state and batches.

The mesh has three named axes, sized from `config.mesh`:

  data    batch parallelism (params replicated across it),
  fsdp    batch parallelism that also shards parameters (ZeRO-3 style),
  tensor  model parallelism inside a layer (heads, MLP hidden units).

Models name the axes of their parameters and activations with logical names
(`nn.with_logical_partitioning(init, ("embed", "mlp"))`); `config.mesh.rules` maps each logical
name to a mesh axis (or None = replicated), so changing the parallelism is a config edit. A
parameter without annotations is replicated. Batches are split over `data` and `fsdp` together.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from stjax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis name -> mesh axis. `batch` must map to the batch axes; the rest are the names
# stjax models use on their parameters and activations (docs/training.md lists them).
DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),      # model width d: sharded over fsdp (params) only.
    ("mlp", "tensor"),      # MLP hidden units.
    ("heads", "tensor"),    # attention heads x head dim (input of the attention out-projection).
    ("qkv", "tensor"),      # fused q|k|v output columns of GPT-2's c_attn.
    ("kv", None),           # per-head features.
    ("vocab", "tensor"),    # token table rows.
    ("positions", None),    # learned position table rows.
    ("nodes", None),        # sensor/zone nodes.
    ("time", None),         # time steps / patches.
    ("memory", None),       # MRFFN memory slots.
    ("experts", None),      # mixture-of-experts experts.
)


def default_mesh_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.data = -1  # data-parallel axis size; -1 = all devices left over.
  c.fsdp = 1  # parameter-sharding data-parallel axis size (-1 = fill).
  c.tensor = 1  # tensor-parallel axis size (-1 = fill).
  c.rules = DEFAULT_RULES  # logical axis name -> mesh axis (see stjax/sharding.py).
  return c


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
  """Axis sizes (data, fsdp, tensor) with at most one -1 filled from `num_devices`."""
  sizes = [int(mesh_config[a]) for a in MESH_AXES]
  fill = [a for a, s in zip(MESH_AXES, sizes) if s == -1]
  if len(fill) > 1:
    raise UserError(f"config.mesh: at most one axis may be -1 (fill), got {', '.join(fill)}")
  if any(s == 0 or s < -1 for s in sizes):
    raise UserError(f"config.mesh: axis sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
  fixed = math.prod(s for s in sizes if s != -1)
  if fill:
    if num_devices % fixed:
      raise UserError(f"config.mesh: {num_devices} devices are not divisible by the fixed axes "
                      f"(product {fixed}) of {dict(zip(MESH_AXES, sizes))}")
    sizes[sizes.index(-1)] = num_devices // fixed
  elif fixed != num_devices:
    raise UserError(f"config.mesh: {dict(zip(MESH_AXES, sizes))} needs {fixed} devices, "
                    f"but {num_devices} are available (use -1 to fill an axis)")
  return tuple(sizes)


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The (data, fsdp, tensor) mesh over `devices` (default: all devices of all hosts)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  try:
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  except (ValueError, NotImplementedError, AssertionError):
    # Topologies that mesh_utils cannot lay out (e.g. CPU); plain order is fine there.
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
      raise UserError(f"config.mesh.rules: rule for {name!r} names unknown mesh axis {bad[0]!r}; "
                      f"mesh axes are {', '.join(MESH_AXES)}")
    rules.append((str(name), tuple(target) if isinstance(target, (list, tuple)) else target))
  return tuple(rules)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def tree_shardings(abstract_tree, mesh: Mesh, rules) -> Any:
  """NamedShardings for a tree from `jax.eval_shape(model.init, ...)` (boxed leaves allowed).

  Leaves boxed by `nn.with_logical_partitioning` get their logical axes mapped through `rules`;
  plain leaves are replicated. The result matches the UNBOXED tree (`nn.meta.unbox`).
  """
  specs = nn.get_partition_spec(abstract_tree)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  unboxed = unbox_abstract(abstract_tree)
  for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(unboxed),
                                    jax.tree_util.tree_leaves(shardings)):
    _check_divisible(path, leaf.shape, sharding)
  return shardings


def unbox_abstract(tree) -> Any:
  """Strips logical-partitioning boxes from an abstract tree (no sharding constraints applied)."""
  return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if isinstance(x, nn.Partitioned) else x,
                      tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def _check_divisible(path, shape, sharding: NamedSharding) -> None:
  for dim, axes in zip(shape, sharding.spec):
    if axes is None:
      continue
    size = math.prod(sharding.mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
    if dim % size:
      raise UserError(f"config.mesh: parameter {jax.tree_util.keystr(path)} of shape {shape} cannot be "
                      f"split {size} ways over {axes!r}; change config.mesh or config.mesh.rules")


def opt_state_shardings(abstract_opt_state, abstract_params, param_shardings, mesh: Mesh) -> Any:
  """Optimizer-state shardings: a leaf whose tree path ends with a parameter's path and has
  that parameter's shape (Adam moments, lookahead slow weights) follows the parameter's
  sharding; everything else (step counts, scalars) is replicated."""
  by_path = {}
  for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(abstract_params),
                                    jax.tree_util.tree_leaves(param_shardings)):
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


def put_batch(batch: dict[str, np.ndarray], sharding: NamedSharding, *,
              whole: bool = False) -> dict[str, jax.Array]:
  """Host batch -> global arrays split over the batch axes of the mesh.

  By default every host passes its own `global_batch / process_count` rows and the global batch
  is their concatenation in process order (training). With `whole=True` every host passes the
  same whole global batch and keeps only the rows its devices hold (evaluation).
  """
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    out[k] = jax.make_array_from_process_local_data(sharding, v, v.shape if whole else None)
  return out
