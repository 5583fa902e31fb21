"""Fill docs/scaling_tpu.json: the cells of the TPU sizing table, one `python -m stjax.compile_only
--tpu=...` each, run one after another (each a paper-size TPU compile: minutes).

    python benchmarks/tpu_sizing.py --cells=targets            # the issue-18 targets first
    python benchmarks/tpu_sizing.py --cells=table --only=st_link_pemsbay
    python benchmarks/tpu_sizing.py --list                     # every cell and its command

A cell whose label is already in the JSON file is skipped (delete it there to re-measure), so an
interrupted run resumes. Each record is the command's last-line JSON plus `label`, `command` and
`wall_s` (compile wall time on this machine, under whatever load it had).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "scaling_tpu.json"

# Levers (docs/scaling.md "Memory levers"): flags added to a cell.
BF16 = ("--config.train.compute_dtype=bfloat16", "--config.model.dtype=bfloat16")
FROZEN = ("--config.train.frozen_dtype=bfloat16",)
REMAT = ("--config.model.remat=block",)
REMAT_FULL = ("--config.model.remat=full",)
XLA = ("--config.kernels.attention=xla",)  # the "before" attention (dense, blockwise above 64 MiB)
LEVERS = {
  "none": XLA,
  "bf16": BF16 + XLA,
  "bf16+frozen": BF16 + FROZEN + XLA,
  "bf16+frozen+remat": BF16 + FROZEN + REMAT + XLA,
  # auto attention: splash on TPU unless the model has attention dropout (STH-SepNet, ST-LLM: xla)
  "all": BF16 + FROZEN + REMAT,
  "bf16+frozen+remat_full": BF16 + FROZEN + REMAT_FULL + XLA,
  "all_full": BF16 + FROZEN + REMAT_FULL,
}
PAPER = {  # config file, paper batch
  "st_link_metrla": ("configs/st_link_metrla.py", 64),
  "st_link_pemsbay": ("configs/st_link_pemsbay.py", 64),
  "st_link_nyctaxi": ("configs/st_link_nyctaxi.py", 64),
  "st_link_citibike": ("configs/st_link_citibike.py", 64),
  "sth_sepnet_pems03": ("configs/sth_sepnet_pems03.py", 32),  # BERT-base (the paper's Table 1)
  "sth_sepnet_pems03_gpt2": ("configs/sth_sepnet_pems03.py:gpt2", 32),
  "sth_sepnet_metrla": ("configs/sth_sepnet_metrla.py", 32),
  "sth_sepnet_metrla_gpt2": ("configs/sth_sepnet_metrla.py:gpt2", 32),
  "sth_sepnet_bike": ("configs/sth_sepnet_bike_inflow.py", 32),
  "st_llm_nyctaxi": ("configs/st_llm_nyctaxi.py", 64),
}
TPUS = ("v5e-1", "v5e-8", "v5p-8", "v6e-8")


# Configs whose language model takes its geometry from a hub checkpoint this machine cannot read
# (BERT-base): sized as the random BERT their geometry fields give, the same shapes (weights do not
# change a compile).
GEOMETRY_ONLY = ("--config.model.pretrained=",)
BERT_CONFIGS = (
  "configs/sth_sepnet_pems03.py",
  "configs/sth_sepnet_metrla.py",
  "configs/sth_sepnet_bike_inflow.py",
)


def cell(label, config, tpu, batch, levers, *extra, max_batch=False):
  extra = (*extra, *GEOMETRY_ONLY) if config in BERT_CONFIGS else extra
  args = [f"--config={config}", f"--tpu={tpu}", f"--config.train.batch_size={batch}", *LEVERS[levers], *extra]
  if max_batch:
    args.append("--max_batch")
  return label, args


def cells(kind: str) -> list[tuple[str, list[str]]]:
  pemsbay = PAPER["st_link_pemsbay"][0]
  large = ("--nodes=8600", "--config.mesh.nodes=8", "--config.mesh.data=1")
  targets = [
    cell("target/st_link_pemsbay/v5e-1/b64/all", pemsbay, "v5e-1", 64, "all"),
    cell("target/st_link_pemsbay/v5e-1/b64/bf16+frozen+remat", pemsbay, "v5e-1", 64, "bf16+frozen+remat"),
    cell("target/st_link_largest/v5e-8/nodes8/b16/all", pemsbay, "v5e-8", 16, "all", *large),
    cell(
      "target/st_link_largest/v5e-8/nodes8/b16/bf16+frozen+remat",
      pemsbay,
      "v5e-8",
      16,
      "bf16+frozen+remat",
      *large,
    ),
    cell("target/st_link_pemsbay/v5e-1/b64/none", pemsbay, "v5e-1", 64, "none"),
    cell("target/st_link_largest/v5e-8/nodes8/b16/all_full", pemsbay, "v5e-8", 16, "all_full", *large),
    cell(
      "target/st_link_largest/v5e-8/nodes8/b16/bf16+frozen+remat_full",
      pemsbay,
      "v5e-8",
      16,
      "bf16+frozen+remat_full",
      *large,
    ),
    cell("target/st_link_pemsbay/v5e-1/max/all_full", pemsbay, "v5e-1", 64, "all_full", max_batch=True),
  ]
  for name in ("sth_sepnet_pems03", "sth_sepnet_pems03_gpt2", "sth_sepnet_metrla", "sth_sepnet_metrla_gpt2"):
    for levers in ("none", "bf16+frozen+remat", "bf16+frozen+remat_full"):
      targets.append(cell(f"target/{name}/v5e-1/b32/{levers}", PAPER[name][0], "v5e-1", 32, levers))
  if kind == "targets":
    return targets
  table = []  # per config and chip: every lever added in turn at the paper batch, then --max_batch
  for name, (config, batch) in PAPER.items():
    for tpu in TPUS:
      for levers in ("none", "bf16", "bf16+frozen", "bf16+frozen+remat", "all"):
        table.append(cell(f"table/{name}/{tpu}/b{batch}/{levers}", config, tpu, batch, levers))
      for levers in ("none", "all_full"):
        table.append(cell(f"table/{name}/{tpu}/max/{levers}", config, tpu, batch, levers, max_batch=True))
  for name in ("st_link_pemsbay", "sth_sepnet_pems03"):
    for levers in ("none", "all_full"):
      table.append(
        cell(
          f"table/{name}_largest/v5e-8/nodes8/max/{levers}",
          PAPER[name][0],
          "v5e-8",
          8,
          levers,
          *large,
          max_batch=True,
        )
      )
  return table


def markdown(records: list[dict]) -> str:
  """The measured cells: HBM per chip, verdict, largest batch, FLOPs, compile wall time."""
  gib = lambda n: "?" if n is None else f"{n / 2**30:.2f}"  # noqa: E731
  rows = [
    "| cell | chip x mesh | kernels (attention, experts) | levers | batch | HBM / chip (GiB) | of | fits | largest batch | model FLOPs / step | compile |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in records:
    lv = r["levers"]
    levers = ", ".join(f"{k}={v}" for k, v in lv.items() if v not in ("float32", "none")) or "none"
    mesh = "x".join(f"{k} {v}" for k, v in r["mesh"].items() if v > 1) or "1"
    largest = r.get("max_batch")
    largest = "-" if largest is None else f"{largest} ({r['max_batch_first_failure'] or 'limit'} fails)"
    approx = "" if r.get("memory_per_device") else " (compiler refused: temps + state)"
    rows.append(
      f"| {r['label']} | {r['target']}, {mesh} | {r['kernels']['attention']}, {r['kernels']['experts']} | {levers} | "
      f"{r['batch_size']} | {gib(r['hbm_per_device_bytes'])}{approx} | {gib(r['hbm_capacity_bytes'])} | "
      f"{'yes' if r['fits'] else 'NO'} | {largest} | {r.get('flops_per_step', float('nan')):.3g} | {r['wall_s']:.0f} s |"
    )
  return "\n".join(rows)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cells", choices=("targets", "table"), default="targets")
  parser.add_argument("--only", default="", help="run only labels containing this text")
  parser.add_argument("--list", action="store_true", help="print the cells and their commands")
  parser.add_argument("--table", action="store_true", help="print the measured cells as a markdown table")
  parser.add_argument("--timeout", type=int, default=7200, help="seconds per cell")
  parser.add_argument(
    "--out", type=pathlib.Path, default=OUT, help="the JSON file (default docs/scaling_tpu.json)"
  )
  args = parser.parse_args()
  out_file = args.out
  todo = [(label, a) for label, a in cells(args.cells) if args.only in label]
  if args.table:
    print(markdown(json.loads(out_file.read_text()) if out_file.exists() else []))
    return 0
  if args.list:
    for label, a in todo:
      print(f"{label}\n  python -m stjax.compile_only {' '.join(a)}")
    return 0
  for label, a in todo:
    records = json.loads(out_file.read_text()) if out_file.exists() else []
    if any(r["label"] == label for r in records):
      continue
    command = [sys.executable, "-m", "stjax.compile_only", *a]
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=args.timeout)
    wall = time.perf_counter() - start
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines or not lines[-1].startswith("{"):
      print(f"{label}: FAILED ({out.returncode}) {out.stderr.strip().splitlines()[-1:]}", flush=True)
      continue
    record = {
      "label": label,
      "command": "python -m stjax.compile_only " + " ".join(a),
      "wall_s": round(wall, 1),
    }
    record.update(json.loads(lines[-1]))
    records = json.loads(out_file.read_text()) if out_file.exists() else []
    out_file.write_text(json.dumps(records + [record], indent=1) + "\n")
    gib = (record.get("hbm_per_device_bytes") or 0) / 2**30
    print(
      f"{label}: {gib:.2f} GiB, fits={record['fits']}, max_batch={record.get('max_batch')}, {wall:.0f} s",
      flush=True,
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
