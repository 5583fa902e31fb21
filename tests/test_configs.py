"""Every config file and variant in configs/ builds: its ConfigDict validates, its data resolves
to a DataSpec under its protocol, and its model, optimizer state and shardings build abstractly
(jax.eval_shape of init and forward, as the trainer does: no parameters materialised, no training,
no weights loaded). Real data from the real-data folder (STJAX_SHARED_DATA) is used where present; a registry dataset that is absent
here is replaced by a random stand-in with the registry's node count, rate and channels, so the
model is still built for the real data shape. The recipes' dataset table agrees with the data
registry and the protocols, and the STH-SepNet `:gpt2` variants are the GPT-2 configs of before the
BERT default (tests/fixtures/sth_sepnet_gpt2_configs.json, dumped from them)."""

import json
import pathlib
import warnings

import flax.linen as nn
import jax
import numpy as np
import pytest
from helpers import load_config

from stjax.data import build_data, registry, windows
from stjax.data.dataset import Dataset
from stjax.data.protocols import get_protocol
from stjax.errors import UserError
from stjax.models import build_model, sth_sepnet
from stjax.models.backbones.bert import BertConfig
from stjax.models.backbones.config import backbone_config
from stjax.recipes import datasets
from stjax.train import optim
from stjax.train.config import base_config, trainability_policy, validate_config
from stjax.train.experiment import schedule_of

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
GPT2_CONFIGS = pathlib.Path(__file__).resolve().parent / "fixtures" / "sth_sepnet_gpt2_configs.json"
SEPNET = ("pems03", "metrla", "bj500", "bike_inflow", "bike_outflow")

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
  "st_llm_metrla.py": [None, "cpu"],
  "sth_sepnet_pems03.py": [None, "cpu", "gpt2", "cpu,gpt2"],
  "sth_sepnet_metrla.py": [None, "cpu", "gpt2", "cpu,gpt2", "dcrnn", "cpu,dcrnn"],
  "sth_sepnet_bike_inflow.py": [None, "cpu", "gpt2", "cpu,gpt2"],
  "sth_sepnet_bike_outflow.py": [None, "cpu", "gpt2", "cpu,gpt2"],
  "sth_sepnet_bj500.py": [None, "cpu", "gpt2", "cpu,gpt2"],
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
    warnings.simplefilter("ignore", UserWarning)  # random-init LM on purpose in :cpu variants
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
    assert n_params > 50_000_000  # GPT-2- or BERT-base-sized backbone (weights are loaded by the trainer)
    assert n_trainable < n_params  # paper settings freeze part of the LLM (PFA / LoRA)
  # Registry data is read once, wholly real or wholly stand-in (synthetic makes its own).
  assert len(real_or_stand_in) == (config.data.name != "synthetic")


def test_cpu_variants_of_the_runs_here_use_local_data():
  """The :cpu variants trained for docs/results.md read data of the real-data folder (STJAX_SHARED_DATA)."""
  for filename in (
    "st_link_metrla.py",
    "st_link_nycbike1.py",
    "st_link_nycbike2.py",
    "st_llm_metrla.py",
    "sth_sepnet_metrla.py",
    "sth_sepnet_bike_inflow.py",
    "sth_sepnet_bike_outflow.py",
  ):
    name = load(filename, "cpu").data.name
    assert name in ("metr-la-excerpt", "nycbike1", "nycbike2"), (filename, name)


def test_sth_sepnet_paper_settings():
  """48 -> 48 (protocol default), per-node z-score, Adam, MultiStep 5/20/40/70 x0.3, early stopping;
  BERT-base by default (the paper's Table 1) with the released BERT scripts' numbers."""
  for name in SEPNET:
    c = load(f"sth_sepnet_{name}.py", None)
    assert c.data.protocol == "sthsepnet" and c.data.input_len == 0 and c.data.output_len == 0
    assert (c.optim.name, c.optim.schedule, tuple(c.optim.milestones), c.optim.decay_factor) == (
      "adam",
      "multistep",
      (5, 20, 40, 70),
      0.3,
    )
    assert c.train.patience == 10 and c.optim.trainable == "lora" and c.model.lora_rank == 4
    assert (c.model.backbone, c.model.pretrained, c.model.d_model) == ("bert", "bert-base-uncased", 768)
    assert c.model.llm_layers == 12  # every bert-base block, never more (released: 32)
    bike = name.startswith("bike")
    assert (c.optim.learning_rate, c.train.batch_size, c.train.num_epochs, c.model.d_ff) == (
      (1e-4, 16, 50, 32) if bike else (3e-4, 32, 30, 128)
    )


def _as_json(config) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _old_fields(new: dict, old: dict) -> dict:
  """`new` restricted to the fields `old` has (fields added since the fixture was dumped are
  checked to hold their defaults by the caller)."""
  return {k: _old_fields(new[k], v) if isinstance(v, dict) else new[k] for k, v in old.items() if k in new}


@pytest.mark.parametrize("name", SEPNET)
def test_sth_sepnet_gpt2_variants_are_the_gpt2_configs(name):
  """`:gpt2` = the GPT-2 paper config and `:cpu,gpt2` = the tiny random GPT-2 `:cpu` config, field
  for field, as they were before BERT became the default; `:cpu` differs from `:cpu,gpt2` only in
  the backbone family."""
  before = json.loads(GPT2_CONFIGS.read_text())
  filename = f"sth_sepnet_{name}.py"
  defaults = _as_json(base_config(sth_sepnet.default_config()))
  for variant, old in (("gpt2", before[f"{filename}:"]), ("cpu,gpt2", before[f"{filename}:cpu"])):
    new = _as_json(load(filename, variant))
    assert _old_fields(new, old) == old
    expected = {**defaults, "data": dict(defaults["data"])}
    if "cpu" in variant and datasets.DATASETS["sthsepnet-metr"].zeros_missing and name == "metrla":
      expected["data"]["fill_missing"] = "last"  # :cpu fills outage zeros of speed data (added since)
    for section in ("data", "train"):  # fields added since: at their defaults
      added = set(new[section]) - set(old[section])
      assert {k: new[section][k] for k in added} == {k: expected[section][k] for k in added}
  tiny_bert, tiny_gpt2 = _as_json(load(filename, "cpu")), _as_json(load(filename, "cpu,gpt2"))
  assert tiny_bert["model"].pop("backbone") == "bert" and tiny_gpt2["model"].pop("backbone") == "gpt2"
  assert tiny_bert == tiny_gpt2


def test_sth_sepnet_dcrnn_variant_changes_only_the_windows():
  """`:dcrnn` = the same config with 12 -> 12 DCRNN windows and 6 patch tokens; `:cpu,dcrnn` adds
  the calendar and node inputs; nothing else moves."""

  def flat(variant):
    return {
      (s, k): v
      for s, fields in _as_json(load("sth_sepnet_metrla.py", variant)).items()
      if isinstance(fields, dict)
      for k, v in fields.items()
    }

  windows = {
    ("data", "protocol"): "dcrnn",
    ("data", "input_len"): 12,
    ("data", "output_len"): 12,
    ("model", "patch_len"): 4,
    ("model", "stride"): 2,
  }
  for base, extra in ((None, {}), ("cpu", {("model", "calendar_dim"): 4, ("model", "node_input_dim"): 16})):
    before, after = flat(base), flat("dcrnn" if base is None else f"{base},dcrnn")
    assert {k: v for k, v in after.items() if before.get(k) != v} == {**windows, **extra}


def test_sth_sepnet_cpu_bert_takes_its_geometry_from_the_config():
  """A random BERT (`pretrained` empty) is as wide as the tiny GPT-2 of `:cpu,gpt2`: width n_embd,
  FFN 4 x n_embd, vocab_size word rows, n_positions position rows, llm_layers blocks; the paper
  setting's (`pretrained` named, checkpoint not read here) is bert-base."""
  m = load("sth_sepnet_metrla.py", "cpu").model
  bert = backbone_config(m, causal=True, use_wpe=True)
  assert (bert.hidden_size, bert.num_attention_heads, bert.intermediate_size) == (64, 4, 256)
  assert (bert.vocab_size, bert.max_position_embeddings, bert.num_hidden_layers) == (256, 64, 2)
  assert (bert.hidden_dropout_prob, bert.attention_probs_dropout_prob, bert.causal) == (0.0, 0.0, False)
  gpt2 = backbone_config(load("sth_sepnet_metrla.py", "cpu,gpt2").model, causal=True, use_wpe=True)
  assert (gpt2.n_embd, gpt2.n_head, gpt2.vocab_size, gpt2.n_positions, gpt2.n_layer) == (64, 4, 256, 64, 2)
  paper = backbone_config(load("sth_sepnet_metrla.py", None).model, causal=True, use_wpe=True)
  assert paper == BertConfig().replace(
    num_hidden_layers=12, causal=False, lora_rank=0, lora_alpha=None, kernels=paper.kernels
  )


@pytest.mark.parametrize("name", sorted(datasets.DATASETS))
def test_recipe_dataset_rows_agree_with_the_registry(name):
  """Each row's protocol is the registry's for its name, its input length the protocol's for the
  dataset's rate, its ST-LINK patch divides it, and every name it reads is registered."""
  row = datasets.DATASETS[name]
  info = registry.get(row.name)
  assert row.protocol == info.protocol
  steps_per_day = int(round(24 * 60 / info.step_minutes))
  assert get_protocol(row.protocol).resolve(steps_per_day).input_len == row.input_len
  assert row.patch_len == 0 or row.input_len % row.patch_len == 0
  for other in (row.drop_name, row.cpu_name):
    assert not other or registry.get(other).name == other


def test_unknown_variant_is_one_clear_line():
  with pytest.raises(UserError, match=r"variant 'gpu' unknown; allowed: cpu, gpt2, dcrnn$") as e:
    load("sth_sepnet_metrla.py", "gpu")
  assert "\n" not in str(e.value)


def test_cpu_variants_fill_outage_zeros_of_speed_data_only():
  """`:cpu` of a dataset whose zeros are outages fills them (chosen on validation); the paper
  setting and count data (zeros are real) keep the inputs as they are."""
  assert load("st_link_metrla.py", "cpu").data.fill_missing == "last"
  assert load("sth_sepnet_metrla.py", "cpu").data.fill_missing == "last"
  assert load("st_link_metrla.py", None).data.fill_missing == "none"
  assert load("st_link_pemsbay.py", None).data.fill_missing == "none"
  assert load("st_link_nycbike1.py", "cpu").data.fill_missing == "none"
  assert load("st_llm_nyctaxi.py", "cpu").data.fill_missing == "none"
  assert not load("st_link_metrla.py", "cpu").model.revin and load("st_link_metrla.py", None).model.revin
