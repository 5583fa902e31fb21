"""Traffic-like synthetic speeds on any graph, at any number of nodes, deterministic by seed.

The generator places sensors at random 2-D points and links each to its k nearest neighbours (a
sparse, road-like graph kept as an edge list; no N x N array is formed unless asked for), then
simulates speed = free_flow * (1 - 0.55 tanh(recurrent + incident)) + noise:

- recurrent congestion: morning and evening peaks with per-node strength and timing, much weaker on
  weekends (daily and weekly cycles; predictable from the calendar);
- incidents: random congestion sources that last a while and spread to neighbouring sensors with a
  lag through e_t = rho e_{t-1} + gamma mean_neighbours(e_{t-1}) + sources_t (predictable from
  neighbours' recent past, invisible to a per-node calendar model);
- Gaussian sensor noise, and missing readings stored as 0 in short outages (as METR-LA does).

So a model that uses neighbours and the calendar beats last-value and historical-average baselines
(tests/test_synthetic.py checks this with a small linear model).
"""

from __future__ import annotations

import numpy as np

from stjax.data.dataset import Dataset, calendar_features
from stjax.errors import UserError

DENSE_ADJACENCY_MAX_NODES = 4096  # Dataset.adjacency is attached up to this N by default
_KNN_CHUNK = 1024  # query rows per block in the kNN search: memory O(chunk x N)


def road_graph(
  num_nodes: int, k: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Random 2-D sensor positions joined to their k nearest neighbours, symmetrised.

  Returns:
    src, dst: [E] int32 directed edges (both directions of every kNN link, no self-loops, unique).
    weight: [E] float32 Gaussian kernel exp(-(d / sigma)^2), sigma = std of the kNN distances.
    coords: [N, 2] float64 positions in the unit square.
  """
  if num_nodes < 2:
    raise UserError(f"data.synthetic.num_nodes: need at least 2 nodes, got {num_nodes}")
  k = min(k, num_nodes - 1)
  rng = np.random.default_rng([seed, 1])
  coords = rng.random((num_nodes, 2))
  c32 = coords.astype(np.float32)  # float32 is plenty to rank neighbours, and twice as fast
  sq = (c32**2).sum(1)
  nbrs = np.empty((num_nodes, k), np.int64)
  for lo in range(0, num_nodes, _KNN_CHUNK):
    q = c32[lo : lo + _KNN_CHUNK]
    d2 = sq[lo : lo + len(q), None] + sq[None, :] - 2 * q @ c32.T  # [chunk, N]
    d2[np.arange(len(q)), np.arange(lo, lo + len(q))] = np.inf  # no self-loops
    part = np.argpartition(d2, k - 1, axis=1)[:, :k]
    nbrs[lo : lo + len(q)] = part
  src = np.repeat(np.arange(num_nodes), k)
  dst = nbrs.ravel()
  pairs = np.unique(np.concatenate([np.stack([src, dst], 1), np.stack([dst, src], 1)]), axis=0)
  src, dst = pairs[:, 0], pairs[:, 1]
  dist = np.linalg.norm(coords[src] - coords[dst], axis=1)
  weight = np.exp(-((dist / dist.std()) ** 2))
  return src.astype(np.int32), dst.astype(np.int32), weight.astype(np.float32), coords


def edges_to_dense(num_nodes: int, src: np.ndarray, dst: np.ndarray, weight: np.ndarray) -> np.ndarray:
  """Edge list -> [N, N] float32 adjacency with 1 on the diagonal (DCRNN convention)."""
  adj = np.zeros((num_nodes, num_nodes), np.float32)
  adj[src, dst] = weight
  np.fill_diagonal(adj, 1.0)
  return adj


def _bump(x: np.ndarray, centre: np.ndarray, width: np.ndarray) -> np.ndarray:
  """Periodic Gaussian bump over the day; x, centre, width in hours."""
  d = (x - centre + 12.0) % 24.0 - 12.0
  return np.exp(-0.5 * (d / width) ** 2)


def generate(
  num_nodes: int = 48,
  num_steps: int = 4032,
  step_minutes: float = 5,
  seed: int = 0,
  missing_rate: float = 0.01,
  adjacency: np.ndarray | None = None,
  neighbours: int = 4,
  start: str = "2024-01-01T00:00",
  with_adjacency: bool | None = None,
  name: str = "synthetic",
) -> Dataset:
  """A synthetic speed dataset [num_steps, num_nodes, 1] with timestamps and (small N) a graph.

  Args:
    num_nodes: sensors (ignored shape-wise if `adjacency` is given; must then match it).
    num_steps: time steps.
    step_minutes: sampling interval.
    seed: everything is a function of the seed.
    missing_rate: target fraction of readings set to 0 (missing), in outages of 1..12 steps.
    adjacency: optional [N, N] graph to simulate on instead of a generated kNN graph.
    neighbours: k of the generated kNN graph.
    start: timestamp of step 0 (2024-01-01 is a Monday).
    with_adjacency: attach the dense [N, N] adjacency to the Dataset; default N <= 4096.
    name: dataset name.
  """
  if num_steps < 1:
    raise UserError(f"data.synthetic.num_steps: must be >= 1, got {num_steps}")
  if step_minutes <= 0 or (24 * 60) % step_minutes:
    raise UserError(f"data.synthetic.step_minutes: must divide a day, got {step_minutes}")
  if not 0 <= missing_rate < 1:
    raise UserError(f"data.synthetic.missing_rate: must be in [0, 1), got {missing_rate}")
  if adjacency is not None:
    adjacency = np.asarray(adjacency, np.float32)
    if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1] or adjacency.shape[0] != num_nodes:
      raise UserError(
        f"synthetic: adjacency has shape {adjacency.shape}, expected ({num_nodes}, {num_nodes})"
      )
    src, dst = np.nonzero(adjacency * (1 - np.eye(num_nodes, dtype=np.float32)))
    weight = adjacency[src, dst]
  else:
    src, dst, weight, _ = road_graph(num_nodes, neighbours, seed)
  n, t = num_nodes, num_steps
  rng = np.random.default_rng([seed, 2])

  timestamps = np.datetime64(start, "s") + (np.arange(t) * step_minutes * 60).astype("timedelta64[s]")
  tod, dow = calendar_features(timestamps)

  # Recurrent congestion: weekday peaks at ~8:00 and ~17:30, node-specific; weekends at 35%.
  # Computed once per time of day [steps_per_day, N], then indexed by each step's time of day.
  steps_per_day = int(24 * 60 // step_minutes)
  hours = (np.arange(steps_per_day) * (24.0 / steps_per_day))[:, None]
  am = _bump(hours, rng.normal(8.0, 0.5, n), rng.uniform(0.8, 1.5, n)) * rng.uniform(0.2, 1.4, n)
  pm = _bump(hours, rng.normal(17.5, 0.6, n), rng.uniform(1.0, 2.0, n)) * rng.uniform(0.3, 1.6, n)
  step_of_day = np.rint(tod.astype(np.float64) * steps_per_day).astype(np.int64) % steps_per_day
  weekday = np.where(dow >= 5, 0.35, 1.0).astype(np.float32)[:, None]
  recurrent = weekday * (am + pm).astype(np.float32)[step_of_day]  # [T, N]

  # Incidents: sources lasting 30 min..3 h, about one per node every two days.
  count = rng.poisson(n * t / (2.0 * steps_per_day))
  where = rng.integers(0, n, count)
  begin = rng.integers(0, t, count)
  length = rng.integers(max(1, 30 // int(step_minutes)), max(2, 180 // int(step_minutes)) + 1, count)
  strength = rng.uniform(0.05, 0.2, count)
  sources = np.zeros((t, n), np.float32)
  rows = np.repeat(begin, length) + (np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length))
  keep = rows < t
  np.add.at(sources, (rows[keep], np.repeat(where, length)[keep]), np.repeat(strength, length)[keep])

  # Spread along edges with a one-step lag: neighbour mean weighted by the edge weights.
  rho, gamma = 0.75, 0.2
  norm = np.bincount(dst, weights=weight, minlength=n)
  norm[norm == 0] = 1.0
  w_in = weight / norm[dst]
  incident = np.empty((t, n), np.float32)
  e = np.zeros(n)
  for i in range(t):
    spread = np.bincount(dst, weights=w_in * e[src], minlength=n)
    e = rho * e + gamma * spread + sources[i]
    incident[i] = e

  free_flow = rng.uniform(55.0, 70.0, n)
  noise = rng.standard_normal((t, n), dtype=np.float32) * np.float32(1.5)
  speed = free_flow.astype(np.float32) * (1.0 - np.float32(0.55) * np.tanh(recurrent + incident)) + noise
  speed = np.maximum(speed, np.float32(3.0))

  # Missing readings: outages of 1..12 steps at random nodes, stored as 0.
  if missing_rate > 0:
    outages = rng.poisson(missing_rate * t * n / 6.5)
    o_node = rng.integers(0, n, outages)
    o_start = rng.integers(0, t, outages)
    o_len = rng.integers(1, 13, outages)
    o_rows = np.repeat(o_start, o_len) + (np.arange(o_len.sum()) - np.repeat(np.cumsum(o_len) - o_len, o_len))
    keep = o_rows < t
    speed[o_rows[keep], np.repeat(o_node, o_len)[keep]] = 0.0

  if with_adjacency is None:
    with_adjacency = n <= DENSE_ADJACENCY_MAX_NODES
  adj = None
  if with_adjacency:
    adj = adjacency if adjacency is not None else edges_to_dense(n, src, dst, weight)
  return Dataset(
    name=name,
    values=speed[:, :, None],
    channels=("speed",),
    step_minutes=float(step_minutes),
    time_of_day=tod,
    day_of_week=dow,
    timestamps=timestamps,
    node_ids=tuple(str(i) for i in range(n)),
    adjacency=adj,
  )
