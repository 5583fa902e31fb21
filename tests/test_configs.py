"""Every config file and variant in configs/ builds: its ConfigDict validates, its data resolves
to a DataSpec under its protocol, and its model, optimizer state and shardings build abstractly
(jax.eval_shape of init and forward, as the trainer does: no parameters materialised, no training,
no weights loaded). Real data from ../shared/data is used where present; a registry dataset that is absent
here is replaced by a random stand-in with the registry's node count, rate and channels, so the
model is still built for the real data shape."""

import pathlib
import warnings

import flax.linen as nn
import jax
import numpy as np
import pytest
from helpers import load_config

from stjax.data import build_data, registry, windows
from stjax.data.dataset import Dataset
from stjax.errors import UserError
from stjax.models import build_model
from stjax.train import optim
from stjax.train.config import trainability_policy, validate_config
from stjax.train.experiment import schedule_of

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"

# Each config file with its variants (None = no argument). A new config file must be listed here.
VARIANTS = {
  "quickstart.py": [None],
  "st_link_metrla.py": [None, "cpu"],
  "st_link_pemsbay.py": [None, "cpu"],
  "st_link_nyctaxi.py": [None, "cpu", "drop", "cpu,drop"],
  "st_link_citibike.py": [None, "cpu", "drop", "cpu,drop"],
  "st_link_nycbike1.py": [None, "cpu"],
  "st_link_nycbike2.py": [None, "cpu"],
  "st_llm_nyctaxi.py": [None, "cpu", "drop", "cpu,drop"],
  "st_llm_citibike.py": [None, "cpu", "drop", "cpu,drop"],
  "sth_sepnet_pems03.py": [None, "cpu"],
  "sth_sepnet_metrla.py": [None, "cpu"],
  "sth_sepnet_bike_inflow.py": [None, "cpu"],
  "sth_sepnet_bike_outflow.py": [None, "cpu"],
  "sth_sepnet_bj500.py": [None, "cpu"],
}
CASES = [(f, v) for f, vs in VARIANTS.items() for v in vs]
_STAND_IN_STEPS = 2016


def load(filename: str, variant: str | None):
  return load_config(CONFIGS / filename, *(() if variant is None else (variant,)))


def _stand_in(config) -> Dataset:
  """Random positive series with the registry dataset's shape (nodes, rate, channels)."""
  info = registry.get(config.name)
  stssl = info.protocol == "stssl"
  channels = ("inflow", "outflow") if stssl else ("value",)
  t, n = _STAND_IN_STEPS, info.nodes
  rng = np.random.default_rng(0)
  steps = np.arange(t)
  per_day = int(24 * 60 // info.step_minutes)
  ring = np.roll(np.eye(n, dtype=np.float32), 1, axis=1)
  return Dataset(
    name=f"{config.name} (stand-in)",
    values=rng.gamma(2.0, 5.0, size=(t, n, len(channels))).astype(np.float32) + 1,
    channels=channels,
    step_minutes=float(info.step_minutes),
    time_of_day=((steps % per_day) / per_day).astype(np.float32),
    day_of_week=((steps // per_day) % 7).astype(np.int32),
    adjacency=ring + ring.T,
  )


@pytest.fixture
def real_or_stand_in(monkeypatch):
  """windows._read: the real files where all are present, else the stand-in; records which."""
  real_read, used = windows._read, []

  def read(config):
    if config.path or all(p is not None for p in registry.find_local(config.name).values()):
      used.append("real")
      return real_read(config)
    used.append("stand-in")
    return _stand_in(config)

  monkeypatch.setattr(windows, "_read", read)
  return used


def test_every_config_file_is_listed():
  assert sorted(p.name for p in CONFIGS.glob("*.py")) == sorted(VARIANTS)


@pytest.mark.parametrize("filename,variant", CASES, ids=[f"{f}:{v or ''}" for f, v in CASES])
def test_config_builds_its_model_for_its_data(filename, variant, real_or_stand_in):
  config = load(filename, variant)
  validate_config(config)
  assert config.model.name and config.data.name
  if variant and "cpu" in variant:
    # :cpu variants run without downloads: random init, never pretrained weights.
    assert config.model.get("pretrained", "") == ""
  bundle = build_data(config.data)
  spec = bundle.spec
  steps_per_epoch, total, _ = schedule_of(config, len(bundle.splits["train"]))
  assert steps_per_epoch >= 1 and total >= 1
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # random-init GPT-2 on purpose in :cpu variants
    model = build_model(config.model, spec)
  # Abstract init and forward (as the trainer's init, traced once, nothing materialised):
  # predictions [B, T_out, N, C_out] for a batch of the data's shape.
  example = {k: v for k, v in bundle.splits["train"].batch([0, 1]).items() if k in ("x", "tod", "dow")}
  key = jax.random.key(0)
  (pred, aux), variables = jax.eval_shape(
    lambda: model.init_with_output({"params": key, "dropout": key}, example, train=False)
  )
  assert pred.shape == (2, spec.output_len, spec.num_nodes, spec.out_channels)
  assert "aux_loss" in aux
  params = nn.meta.unbox(variables["params"])
  mask = optim.trainable_mask(params, trainability_policy(config))
  n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
  n_trainable = sum(
    int(np.prod(a.shape)) for a, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m
  )
  assert 0 < n_trainable <= n_params
  if variant and "cpu" in variant:
    assert n_params < 5_000_000  # reduced
  elif filename != "quickstart.py":
    assert n_params > 50_000_000  # GPT-2-sized backbone (weights are loaded by the trainer)
    assert n_trainable < n_params  # paper settings freeze part of the LLM (PFA / LoRA)
  # Registry data is read once, wholly real or wholly stand-in (synthetic makes its own).
  assert len(real_or_stand_in) == (config.data.name != "synthetic")


def test_cpu_variants_of_the_runs_here_use_local_data():
  """The :cpu variants trained for docs/results.md read data staged in ../shared/data."""
  for filename in (
    "st_link_metrla.py",
    "st_link_nycbike1.py",
    "st_link_nycbike2.py",
    "sth_sepnet_metrla.py",
    "sth_sepnet_bike_inflow.py",
    "sth_sepnet_bike_outflow.py",
  ):
    name = load(filename, "cpu").data.name
    assert name in ("metr-la-excerpt", "nycbike1", "nycbike2"), (filename, name)


def test_sth_sepnet_paper_settings():
  """48 -> 48 (protocol default), per-node z-score, Adam, MultiStep 5/20/40/70 x0.3, early stopping."""
  for name in ("pems03", "metrla", "bj500", "bike_inflow", "bike_outflow"):
    c = load(f"sth_sepnet_{name}.py", None)
    assert c.data.protocol == "sthsepnet" and c.data.input_len == 0 and c.data.output_len == 0
    assert (c.optim.name, c.optim.schedule, tuple(c.optim.milestones), c.optim.decay_factor) == (
      "adam",
      "multistep",
      (5, 20, 40, 70),
      0.3,
    )
    assert c.train.patience == 10 and c.optim.trainable == "lora" and c.model.lora_rank == 4
    bike = name.startswith("bike")
    assert (c.optim.learning_rate, c.train.batch_size, c.train.num_epochs, c.model.d_ff) == (
      (5e-4, 16, 50, 32) if bike else (3e-4, 32, 30, 128)
    )


def test_unknown_variant_is_one_clear_line():
  with pytest.raises(UserError, match=r"variant 'gpu' unknown; allowed: cpu") as e:
    load("sth_sepnet_metrla.py", "gpu")
  assert "\n" not in str(e.value)
