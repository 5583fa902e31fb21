"""Kernels: backend-specific implementations behind one explicit choice each (`config.kernels`).

| choice | module | implementations |
|---|---|---|
| `attention` | `attention.py`, `fused_attention.py` | `xla` (dense scores; blockwise, online softmax, above 64 MiB), `xla_dense`, `cudnn` (GPU flash attention), `splash` (TPU Pallas) |
| `experts` | `experts.py` | `dense`, `grouped`, `min_rows` (grouped when it has fewer rows), `ragged` (`jax.lax.ragged_dot`) |
| `leading_sum` | `broadcast.py` | `xla`, `ones_matmul` (fast on XLA CPU) |
| `pallas` | - | `mosaic` (compiled for TPU), `interpret` (Pallas interpreter: CPU tests) |

`dropout.py` (half-bit dropout masks) and `masks.py` serve every backend. `resolve_kernels` (in
`choice.py`) turns `auto` into a choice once, when an experiment is built; model code receives a
`Kernels` and never asks which backend it runs on.
"""

from stjax.kernels.choice import Kernels, default_kernel_config, resolve_kernels

__all__ = ["Kernels", "default_kernel_config", "resolve_kernels"]
