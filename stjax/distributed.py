"""Multi-host setup: `jax.distributed.initialize` exactly when a cluster is there.

A cluster is detected from (in order): explicit coordinator settings (the `STJAX_COORDINATOR`,
`STJAX_NUM_PROCESSES`, `STJAX_PROCESS_ID` environment variables that launch/local_multiprocess.sh
sets), SLURM with more than one task, or a multi-host Cloud TPU slice. A single process on one
machine never initialises anything, so the same command runs on a laptop and on a pod.
"""

from __future__ import annotations

import os

import jax

from stjax.errors import UserError

_initialized = False


def cluster_kind(env: dict[str, str] | None = None) -> str | None:
  """'explicit', 'slurm', 'tpu' or None (single process), from the environment."""
  env = os.environ if env is None else env
  if env.get("STJAX_COORDINATOR"):
    return "explicit"
  if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1")) > 1:
    return "slurm"
  hosts = env.get("TPU_WORKER_HOSTNAMES", "")
  if hosts and len(hosts.split(",")) > 1:
    return "tpu"
  return None


def initialize(env: dict[str, str] | None = None) -> bool:
  """Initialises jax.distributed when a cluster is detected; returns whether it did."""
  global _initialized
  if _initialized:
    return True
  env = os.environ if env is None else env
  kind = cluster_kind(env)
  if kind is None:
    return False
  if kind == "explicit":
    try:
      num_processes = int(env["STJAX_NUM_PROCESSES"])
      process_id = int(env["STJAX_PROCESS_ID"])
    except (KeyError, ValueError):
      raise UserError(
        "STJAX_COORDINATOR is set, so STJAX_NUM_PROCESSES and STJAX_PROCESS_ID must be integers too"
      ) from None
    if jax.config.jax_platforms in ("cpu", None) or env.get("JAX_PLATFORMS") == "cpu":
      # CPU processes need a collectives backend to talk to each other.
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
      coordinator_address=env["STJAX_COORDINATOR"], num_processes=num_processes, process_id=process_id
    )
  else:
    jax.distributed.initialize()  # SLURM and Cloud TPU are auto-detected by JAX itself.
  _initialized = True
  return True


def is_main_process() -> bool:
  """True on the host that writes logs, results and plots (process 0)."""
  return jax.process_index() == 0
