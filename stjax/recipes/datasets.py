"""The datasets of the configs in configs/: one row each, what every method's recipe reads.

Rows are keyed by the registry name of the paper setting (`python -m stjax.data list`).
Method-specific numbers that depend on the dataset (STH-SepNet's released-script groups, its `:cpu`
run lengths) live in that method's recipe.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from stjax.errors import UserError
from stjax.train.config import base_config, parse_variant


@dataclasses.dataclass(frozen=True)
class DatasetRecipe:
  """One dataset as the configs use it."""

  name: str  # registry name of the paper setting; --config.data.path for another file.
  protocol: str  # windows, split, scaler, null rule and metrics (docs/protocols.md).
  input_len: int  # input steps under `protocol` (the protocol sets them; ST-LINK's :cpu patch spans them).
  demand: bool  # True: trip counts (taxi, bike), the ST-LLM paper's lr class for demand (1e-4) and
  # STH-SepNet's released Bike scripts; False: sensor speed or flow (ST-LLM lr 2.5e-4 for speed).
  patch_len: int = 0  # ST-LINK's steps per token patch in the paper setting (divides input_len); 0 = unused.
  drop_name: str = ""  # registry name of the `:drop` variant (drop-offs; `name` is pick-ups); "" = none.
  cpu_name: str = ""  # registry name the `:cpu` variant reads ("" = `name`): a small real series
  # that a CPU trains on in minutes, where the paper's series is large or not the same data.
  zeros_missing: bool = False  # True: a reading of 0 is a sensor outage (loop-detector speeds); the
  # `:cpu` variant then fills input zeros with the last reading (config.data.fill_missing = "last",
  # chosen on validation, docs/results.md); the paper setting feeds them as 0, as the papers' code.

  def variants(self, *extra: str) -> tuple[str, ...]:
    """The `--config=file.py:variant` words this dataset allows: cpu, the method's, pick/drop."""
    return ("cpu",) + extra + (("pick", "drop") if self.drop_name else ())

  def data_name(self, variant: set[str]) -> str:
    """The registry name a variant reads."""
    if "drop" in variant:
      return self.drop_name
    if "cpu" in variant and self.cpu_name:
      return self.cpu_name
    return self.name


# Input lengths: 12 steps (DCRNN, ST-LLM), ST-SSL's closeness + daily + weekly offsets (19 hourly,
# 35 at 30 min), 48 (STH-SepNet).
DATASETS = {
  d.name: d
  for d in (
    # ST-LINK / ST-LLM datasets.
    DatasetRecipe(
      "metr-la", "dcrnn", 12, demand=False, patch_len=3, cpu_name="metr-la-excerpt", zeros_missing=True
    ),
    DatasetRecipe("pems-bay", "dcrnn", 12, demand=False, patch_len=3, zeros_missing=True),
    DatasetRecipe("nycbike1", "stssl", 19, demand=True, patch_len=1),
    DatasetRecipe("nycbike2", "stssl", 35, demand=True, patch_len=1),
    DatasetRecipe("taxi-pick", "stllm", 12, demand=True, patch_len=3, drop_name="taxi-drop"),
    DatasetRecipe("bike-pick", "stllm", 12, demand=True, patch_len=3, drop_name="bike-drop"),
    # STH-SepNet datasets (its :cpu runs read the METR-LA excerpt and NYCBike2, 48 -> 48).
    DatasetRecipe(
      "sthsepnet-metr", "sthsepnet", 48, demand=False, cpu_name="metr-la-excerpt", zeros_missing=True
    ),
    DatasetRecipe("sthsepnet-pems03", "sthsepnet", 48, demand=False),
    DatasetRecipe("sthsepnet-bj500", "sthsepnet", 48, demand=False),
    # BIKE inflow / outflow (Citi Bike stations, hourly): the one :cpu run both configs name reads
    # NYCBike2, a small NYC bike grid whose two channels are inflow and outflow (both predicted and
    # reported; the inflow config's number is `per_channel.inflow`, the outflow one's `outflow`).
    DatasetRecipe("sthsepnet-bike-inflow", "sthsepnet", 48, demand=True, cpu_name="nycbike2"),
    DatasetRecipe("sthsepnet-bike-outflow", "sthsepnet", 48, demand=True, cpu_name="nycbike2"),
  )
}


def start(
  model_config: ml_collections.ConfigDict, dataset: str, arg: str | None, *method_variants: str
) -> tuple[ml_collections.ConfigDict, DatasetRecipe, set[str]]:
  """A full experiment config for `dataset` with its data section set, the dataset's row and the
  parsed `--config=file.py:arg` variant (UserError naming the allowed ones otherwise)."""
  if dataset not in DATASETS:
    raise UserError(f"stjax.recipes: unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
  d = DATASETS[dataset]
  variant = parse_variant(arg, d.variants(*method_variants))
  c = base_config(model_config)
  c.data.name = d.data_name(variant)  # registry name (python -m stjax.data list).
  c.data.protocol = d.protocol  # windows, split, scaler, null rule and metrics (docs/protocols.md).
  if "cpu" in variant and d.zeros_missing:
    c.data.fill_missing = "last"  # outages (zeros) in the inputs take the last reading.
  return c, d, variant
