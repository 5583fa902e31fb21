"""`python -m stjax.convert`: Hugging Face GPT-2 / Llama / BERT -> stjax checkpoint, and back.

python -m stjax.convert gpt2 --source=gpt2 --output=/ckpt/gpt2-6 --num-layers=6
python -m stjax.convert llama --source=meta-llama/Llama-3.2-1B --output=/ckpt/llama-1b
python -m stjax.convert bert --source=/models/all-MiniLM-L6-v2 --output=/ckpt/minilm
python -m stjax.convert export --source=/ckpt/gpt2-6 --output=/hf/gpt2-6
python -m stjax.convert import-st-llm --checkpoint=best_model.pth --output=runs/st_llm --scaler-mean=M --scaler-std=S
python -m stjax.convert import-sth-sepnet --checkpoint=checkpoint --output=runs/sepnet --data=metr.csv
python -m stjax.convert export-run --workdir=runs/st_llm --output=exported [--format=official]

import-st-llm, import-sth-sepnet and export-run read and write run folders, so this entry point
reaches up to stjax.train.run_convert (the one import across layers that pyproject.toml allows).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from stjax.convert import hf_bert, hf_gpt2, hf_llama, official_sth_sepnet
from stjax.convert.backbones import load_backbone
from stjax.errors import cli_entry
from stjax.models.backbones import backbone_name
from stjax.models.backbones.bert import BertConfig
from stjax.models.backbones.llama import LlamaConfig

# Subcommand -> (converter module, family, example hub id, what --num-layers keeps); also the family
# of `export`, by stjax.models.backbones.backbone_name.
FAMILIES = {
  "gpt2": (hf_gpt2, "GPT-2", "gpt2", "blocks"),
  "llama": (hf_llama, "Llama", "meta-llama/Llama-3.2-1B", "blocks"),
  "bert": (hf_bert, "BERT", "bert-base-uncased", "layers"),
}


def _count(params) -> int:
  if isinstance(params, dict):
    return sum(_count(v) for v in params.values())
  return int(np.size(params))


def _describe(config) -> str:
  if isinstance(config, BertConfig):
    return (
      f"{config.num_hidden_layers} layers, width {config.hidden_size}, "
      f"{config.num_attention_heads} heads, mlp {config.intermediate_size}, vocab {config.vocab_size}, "
      f"positions {config.max_position_embeddings}, {config.type_vocab_size} token types"
    )
  if isinstance(config, LlamaConfig):
    rope = f"rope {config.rope_type} (theta {config.rope_theta:g}"
    rope += f", factor {config.rope_factor:g})" if config.rope_type == "llama3" else ")"
    return (
      f"{config.num_hidden_layers} layers, width {config.hidden_size}, "
      f"{config.num_attention_heads} heads ({config.num_key_value_heads} K/V) of {config.head_dim}, "
      f"mlp {config.intermediate_size}, vocab {config.vocab_size}, {rope}, "
      f"{'tied' if config.tie_word_embeddings else 'untied'} embeddings"
    )
  return (
    f"{config.n_layer} layers, width {config.n_embd}, {config.n_head} heads, "
    f"mlp {config.inner_dim}, vocab {config.vocab_size}, positions {config.n_positions}"
  )


@cli_entry
def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m stjax.convert", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  for command, (_, family, example, unit) in FAMILIES.items():
    p = sub.add_parser(
      command, help=f"HF {family} (hub id or local folder) -> stjax checkpoint (orbax + config.json)"
    )
    p.add_argument("--source", required=True, help=f"hub id (e.g. {example}) or local HF folder")
    p.add_argument("--output", required=True, help="new folder for the stjax checkpoint")
    p.add_argument("--num-layers", type=int, default=None, help=f"keep only the first N {unit}")
  export = sub.add_parser(
    "export",
    help="a run folder (--workdir: as export-run) or a GPT-2 / Llama / BERT checkpoint (--source) -> "
    "files readable without stjax",
  )
  what = export.add_mutually_exclusive_group(required=True)
  what.add_argument(
    "--source", help="stjax GPT-2/Llama/BERT checkpoint folder (or an HF folder / hub id) -> HF folder"
  )
  what.add_argument(
    "--workdir", help="run folder -> safetensors + JSON (+ HF backbone folder), as export-run"
  )
  export.add_argument("--output", required=True, help="new folder for the export")
  export.add_argument("--num-layers", type=int, default=None, help="--source: keep only the first N blocks")
  export.add_argument(
    "--format",
    default="stjax",
    choices=("stjax", "official"),
    help="--workdir: official = ST-LLM's best_model.pth",
  )
  official_sth_sepnet.add_arguments(
    sub.add_parser(
      "import-sth-sepnet",
      help="official STH-SepNet checkpoint -> stjax run folder (evaluate / predict / export)",
    )
  )
  st_llm = sub.add_parser(
    "import-st-llm", help="official ST-LLM best_model.pth -> stjax run folder (evaluate / predict / export)"
  )
  st_llm.add_argument("--checkpoint", required=True, help="the official best_model.pth")
  st_llm.add_argument("--output", required=True, help="new folder for the run")
  st_llm.add_argument(
    "--scaler-mean", type=float, help="the official StandardScaler's mean (of x_train[..., 0])"
  )
  st_llm.add_argument("--scaler-std", type=float, help="the official StandardScaler's std")
  st_llm.add_argument(
    "--data",
    help="or the data it was trained on (registry name or ST-LLM split folder): scaler fitted on its train split",
  )
  st_llm.add_argument(
    "--n-head", type=int, help="attention heads (not stored; default n_embd // 64 for GPT-2 widths)"
  )
  st_llm.add_argument("--unfrozen-layers", type=int, help="U of PFA (not stored; default min(2, blocks))")
  export_run = sub.add_parser(
    "export-run", help="stjax run folder -> safetensors + JSON (+ HF backbone folder), or --format=official"
  )
  export_run.add_argument(
    "--workdir", required=True, help="run folder (stjax.train, import-st-llm or import-sth-sepnet)"
  )
  export_run.add_argument("--output", required=True, help="new folder for the export")
  export_run.add_argument(
    "--format", default="stjax", choices=("stjax", "official"), help="official: ST-LLM's best_model.pth"
  )
  args = parser.parse_args(argv)
  if args.command == "export" and args.workdir is not None:
    if args.num_layers is not None:
      parser.error("--num-layers applies to --source (a backbone checkpoint), not to --workdir")
    args.command = "export-run"
  elif args.command == "export" and args.format != "stjax":
    parser.error("--format applies to --workdir (a run folder), not to --source")
  if args.command in ("import-st-llm", "import-sth-sepnet", "export-run"):
    return _run_folder_command(args)
  if args.command in FAMILIES:
    converter, family = FAMILIES[args.command][:2]
    config, params, path = converter.convert(args.source, args.output, args.num_layers)
    print(f"converted {args.source}: {family}, {_describe(config)}")
    print(f"parameters: {_count(params):,}")
    print(f"wrote stjax checkpoint: {path} (config.json, params/)")
  else:
    config, params = load_backbone(args.source, args.num_layers)  # GPT-2, Llama or BERT, by config.json
    converter, family = FAMILIES[backbone_name(config)][:2]
    path = converter.export(config, params, args.output)
    print(f"exported {args.source}: {family}, {_describe(config)}")
    print(f"wrote Hugging Face folder: {path} (model.safetensors, config.json)")
  return 0


def _run_folder_command(args) -> int:
  from stjax.train import run_convert  # late: the training stack doubles start-up; two commands need it

  if args.command == "import-st-llm":
    path = run_convert.import_st_llm_run(
      args.checkpoint,
      args.output,
      scaler_mean=args.scaler_mean,
      scaler_std=args.scaler_std,
      data=args.data,
      n_head=args.n_head,
      unfrozen_layers=args.unfrozen_layers,
    )
    print(
      f"imported {args.checkpoint}: ST-LLM run folder {path} (config.json, run.json, scaler.npz, checkpoints/best)"
    )
    print(f"evaluate: python -m stjax.evaluate --workdir={path} --data=TEST_FILE (or --windows=FILE.npz)")
    return 0
  if args.command == "import-sth-sepnet":
    return _import_sth_sepnet(args, run_convert)
  summary = run_convert.export_run(args.workdir, args.output, args.format)
  print(
    f"exported {args.workdir} ({summary['tensors']} tensors) to {args.output}: {', '.join(summary['files'])}"
  )
  backbone = summary.get("backbone")
  if backbone and backbone["folder"]:
    print(
      f"backbone params/llm as a Hugging Face {backbone['family']} folder: {args.output}/{backbone['folder']}"
    )
  return 0


def _import_sth_sepnet(args, run_convert) -> int:
  lo, hi = official_sth_sepnet.read_bounds(args.bounds)
  values = lambda text, flag: None if text is None else run_convert.parse_values(text, flag)
  path, imported = run_convert.import_sth_sepnet_run(
    args.checkpoint,
    args.output,
    scaler_mean=values(args.scaler_mean, "--scaler-mean"),
    scaler_std=values(args.scaler_std, "--scaler-std"),
    data=args.data,
    step_minutes=args.step_minutes,
    bounds=None if args.bounds is None else (lo, hi),
    hypergraph=not args.gnn_only,
    n_head=args.n_head,
    stride=args.stride,
    hyperedge_size=args.hyperedge_size,
  )
  g = imported.geometry
  print(
    f"imported {args.checkpoint}: STH-SepNet, {g.num_nodes} nodes, {g.seq_len} -> {g.seq_len} steps, "
    f"GPT-2 {g.llm_layers} blocks x {g.n_embd}, {g.num_layers} spatial layers, "
    f"{'GNN-only' if args.gnn_only else 'GNN + hypergraph (HGAT)'}"
  )
  for note in imported.notes:
    print(f"  {note}")
  print(f"wrote run folder {path} (config.json, run.json, scaler.npz, imported.json, checkpoints/best)")
  print(f"evaluate: python -m stjax.evaluate --workdir={path} --data=TEST_FILE (or --windows=FILE.npz)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
