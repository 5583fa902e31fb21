"""TPU targets for ahead-of-time sizing with the real TPU compiler (libtpu) on a machine without a TPU.

    target = parse_tpu("v5e:2x4")            # or "v5e-8", "v5litepod-8", "v5p-8", "v4-8", "v6e-8"
    devices = topology_devices(target)       # compile-only TPU devices, usable in a Mesh
    hbm = target.hbm_bytes                   # one chip's HBM

`jax.experimental.topologies.get_topology_desc` asks libtpu for the devices of a slice without
attaching to one; `jax.jit(...).lower(...).compile()` over a mesh of them runs the TPU compiler and
gives the executable's `memory_analysis()`. JAX must run on CPU (`JAX_PLATFORMS=cpu`, else libtpu
looks for a chip) and `ALLOW_MULTIPLE_LIBTPU_LOAD=1` (any other process of the same Python that
initialised libtpu holds its lock file; compile-only use needs no exclusive chip):
`stjax.perf.compile_only` sets both before JAX starts.

Names: `GEN:AxB` (v5e, v6e: 2-D torus of chips) or `GEN:AxBxC` (v4, v5p: 3-D) is the chip grid
libtpu takes; Cloud's accelerator types `v5e-N` / `v5litepod-N` / `v6e-N` count chips, `v4-N` /
`v5p-N` count TensorCores (2 per chip), so v5p-8 is 4 chips (2x2x1). JAX sees one device per chip
on all four (v4 and v5p as megacore).
"""

from __future__ import annotations

import dataclasses
import math
import re

from stjax.errors import UserError

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Generation:
  name: str  # topology prefix libtpu takes ("v5e")
  dims: int  # chip grid dimensions (2 or 3)
  hbm_bytes: int  # HBM of one chip (Google Cloud TPU documentation)
  chip_config: str  # libtpu chip config: one JAX device per chip
  cores_per_chip_in_name: int  # accelerator-type names count chips (1) or TensorCores (2)
  aliases: tuple[str, ...] = ()


GENERATIONS = {
  g.name: g
  for g in (
    Generation("v4", 3, 32 * GIB, "megacore", 2),
    Generation("v5e", 2, 16 * GIB, "default", 1, aliases=("v5litepod", "v5lite")),
    Generation("v5p", 3, 95 * GIB, "default", 2),
    Generation("v6e", 2, 32 * GIB, "default", 1),
  )
}
# Chip grids of the Cloud accelerator types, by number of chips.
_GRIDS_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}
_GRIDS_3D = {
  4: (2, 2, 1),
  8: (2, 2, 2),
  16: (2, 2, 4),
  32: (2, 4, 4),
  64: (4, 4, 4),
  128: (4, 4, 8),
  256: (4, 8, 8),
  512: (8, 8, 8),
}


@dataclasses.dataclass(frozen=True)
class TpuTarget:
  """A TPU slice to compile for."""

  generation: Generation
  grid: tuple[int, ...]  # chips along each torus axis

  @property
  def chips(self) -> int:
    return math.prod(self.grid)

  @property
  def topology_name(self) -> str:  # what libtpu takes, e.g. "v5e:2x4"
    return f"{self.generation.name}:{'x'.join(map(str, self.grid))}"

  @property
  def hbm_bytes(self) -> int:
    return self.generation.hbm_bytes

  @property
  def chips_per_host_bounds(self) -> tuple[int, int, int]:
    """Chips of one host: a whole slice of up to 8 chips on v5e/v6e (one host), else 2x2x1."""
    grid = tuple(self.grid) + (1,) * (3 - len(self.grid))
    if self.generation.dims == 2 and self.chips <= 8:
      return grid
    return tuple(min(g, 2) for g in grid[:2]) + (1,)

  @property
  def label(self) -> str:  # e.g. "v5e-8 (v5e:2x4)"
    n = self.chips * self.generation.cores_per_chip_in_name
    return f"{self.generation.name}-{n} ({self.topology_name})"


def _known() -> str:
  return "v5e:2x4, v6e:1x1, v5p:2x2x1, v4:2x2x2, or v5e-8, v5litepod-8, v6e-8, v5p-8, v4-8"


def parse_tpu(text: str) -> TpuTarget:
  """'v5e:2x4' / 'v5e-8' / 'v5p-8' ... -> TpuTarget (UserError with one line otherwise)."""
  name = text.strip().lower()
  by_alias = {a: g for g in GENERATIONS.values() for a in (g.name,) + g.aliases}
  m = re.fullmatch(r"([a-z0-9]+):(\d+(?:x\d+)*)", name)
  if m and m.group(1) in by_alias:
    gen = by_alias[m.group(1)]
    grid = tuple(int(d) for d in m.group(2).split("x"))
    if len(grid) != gen.dims or min(grid) < 1:
      raise UserError(f"--tpu: {text!r}: {gen.name} slices are {gen.dims}-D chip grids, e.g. {_example(gen)}")
    if math.prod(grid) > 8 and any(g % 2 for g in grid[:2]):
      raise UserError(f"--tpu: {text!r}: multi-host slices need even grid sides (hosts of 2x2 chips)")
    return TpuTarget(gen, grid)
  m = re.fullmatch(r"([a-z0-9]+)-(\d+)", name)
  if m and m.group(1) in by_alias:
    gen = by_alias[m.group(1)]
    count = int(m.group(2))
    chips, rest = divmod(count, gen.cores_per_chip_in_name)
    grids = _GRIDS_2D if gen.dims == 2 else _GRIDS_3D
    if rest or chips not in grids:
      unit = "chips" if gen.cores_per_chip_in_name == 1 else "TensorCores (2 per chip)"
      sizes = ", ".join(str(c * gen.cores_per_chip_in_name) for c in grids)
      raise UserError(f"--tpu: {text!r}: {gen.name}-N counts {unit}; N is one of {sizes}")
    return TpuTarget(gen, grids[chips])
  raise UserError(f"--tpu: {text!r} is not a TPU topology; use e.g. {_known()}")


def _example(gen: Generation) -> str:
  return f"{gen.name}:2x4" if gen.dims == 2 else f"{gen.name}:2x2x1"


def topology_devices(target: TpuTarget) -> list:
  """Compile-only devices of the slice (needs libtpu: `pip install 'stjax[tpu]'`)."""
  try:
    from jax.experimental import topologies

    topo = topologies.get_topology_desc(
      platform="tpu",
      topology_name=target.topology_name,
      chip_config_name=target.generation.chip_config,
      chips_per_host_bounds=target.chips_per_host_bounds,
      num_slices=1,
    )
  except Exception as e:  # libtpu missing or refusing the topology: one line, no traceback
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(
      f"--tpu: the TPU compiler could not describe {target.topology_name} ({first}); "
      "it needs libtpu: pip install 'stjax[tpu]'"
    ) from None
  devices = list(topo.devices)
  if len(devices) != target.chips:
    raise UserError(
      f"--tpu: libtpu gave {len(devices)} devices for {target.topology_name}, expected {target.chips}"
    )
  return devices


_OOM = re.compile(r"RESOURCE_EXHAUSTED|[Rr]an out of memory|exceeds available HBM|Exceeded hbm capacity")
_AMOUNT = re.compile(r"([\d.]+)\s*([KMGT])i?B?\b")
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def is_out_of_memory(error: BaseException) -> bool:
  """Whether a compile error is the TPU compiler refusing a program larger than HBM."""
  return bool(_OOM.search(str(error)))


def oom_required_bytes(error: BaseException) -> int | None:
  """The memory the compiler says the program needs, from its out-of-memory message
  ('... HLO temporaries (18.26G) exceeds available HBM (15.75G)'): the first amount named, or None."""
  text = str(error)
  m = _AMOUNT.search(text[text.find("memory") :] if "memory" in text else text)
  return int(float(m.group(1)) * _UNITS[m.group(2)]) if m else None
