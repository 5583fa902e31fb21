"""DCRNN's thresholded Gaussian-kernel adjacency, built from a list of road distances.

Li et al. (DCRNN, ICLR 2018), `scripts/gen_adj_mx.py`: the distance matrix is +inf where no edge
is listed; sigma is the standard deviation of the listed (finite) distances;
w_ij = exp(-(d_ij / sigma)^2), and weights below a threshold (0.1) are set to 0. The graph stays
directed, and self-loops exist only where the list has a zero-distance i -> i row (as in DCRNN).
"""

from __future__ import annotations

import numpy as np

from stjax.errors import UserError

DCRNN_THRESHOLD = 0.1


def gaussian_kernel_adjacency(
  src: np.ndarray,
  dst: np.ndarray,
  distance: np.ndarray,
  num_nodes: int,
  threshold: float = DCRNN_THRESHOLD,
  name: str = "edge list",
) -> np.ndarray:
  """Weighted adjacency [num_nodes, num_nodes] float32 from edges.

  Args:
    src, dst: [edges] int node indices in 0..num_nodes-1.
    distance: [edges] non-negative distances (or costs). A repeated (src, dst) pair keeps the last
      distance, as DCRNN's loop does.
    num_nodes: N.
    threshold: weights below it become 0 (DCRNN's `normalized_k`).
    name: what to call the source in error messages (usually the file).
  """
  src = np.asarray(src, np.int64)
  dst = np.asarray(dst, np.int64)
  distance = np.asarray(distance, np.float64)
  if not (src.shape == dst.shape == distance.shape) or src.ndim != 1:
    raise UserError(f"{name}: from/to/distance columns must have the same length")
  if src.size == 0:
    raise UserError(f"{name}: no edges")
  if not np.all(np.isfinite(distance)) or np.any(distance < 0):
    raise UserError(f"{name}: distances must be finite and >= 0")
  for col, idx in (("from", src), ("to", dst)):
    bad = idx[(idx < 0) | (idx >= num_nodes)]
    if bad.size:
      raise UserError(f"{name}: '{col}' node index {int(bad[0])} outside 0..{num_nodes - 1}")
  # float32 like DCRNN (its dist_mx is float32), so sigma and weights match its released graphs.
  dist = np.full((num_nodes, num_nodes), np.inf, np.float32)
  dist[src, dst] = distance.astype(np.float32)
  finite = dist[~np.isinf(dist)]
  sigma = finite.std()
  if not sigma > 0:
    raise UserError(f"{name}: all distances are equal, the Gaussian kernel width (their std) is 0")
  adj = np.exp(-np.square(dist / sigma))
  adj[adj < threshold] = 0.0
  return adj.astype(np.float32)
