"""Issue 8's GPU measurements in one run, sized for one call of a lent GPU machine.

Stages, most important first; each is a fresh process whose timeout is its cap or the time left of
`--budget_s`, whichever is less. A stage that fails, times out or finds too little time left is
recorded as such and the suite goes on:

  env          devices, jax / torch versions, nvidia-smi
  stjax_bf16   `python -m stjax.bench`: the ST-LINK paper model (configs/st_link_pemsbay.py: GPT-2
               small geometry, 6 blocks, PFA U = 2, MRFFN) on PEMS-BAY shapes (N = 325, 12 -> 12),
               batch 64, bfloat16: step time, MFU, peak memory, the data pipeline's samples/s
  compare_f32  `benchmarks/compare_torch.py`, the same model in float32 (TF32 matmuls on both
               sides) at --compare_batch: stjax vs torch eager, step time and peak memory
  scaling      `benchmarks/scaling.py`, bfloat16: ST-LINK (bench geometry) and STH-SepNet vs N
               and vs batch; points already measured survive a timeout

Writes into --out_dir at most six files (a device call returns eight): summary.md (printed last),
summary.json, suite.log (every command with its whole output), scaling.json, scaling_nodes.png,
scaling_batch.png.

  bash benchmarks/device_wheels.sh            # here, once: wheels the GPU image lacks, into .whl/
  # the device call (carry .whl; a 600 s limit leaves ~100 s for the wheel install and imports):
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
    .whl/*.whl && PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_suite.py --out_dir=$OUT
  python benchmarks/gpu_suite.py --preset=smoke --out_dir=/tmp/suite   # CPU: the plumbing, toy sizes
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `python benchmarks/gpu_suite.py` from anywhere
  sys.path.insert(0, str(_ROOT))

from benchmarks import scaling  # noqa: E402

PRESETS = {
  # One H100/H200 call. compare_batch 32: stjax and torch share the GPU in one process, and
  # JAX keeps its step's peak allocated while torch runs; B = 64 in float32 needs both at once.
  "gpu": dict(
    config="configs/st_link_pemsbay.py",
    sets=[],
    nodes=325,
    batch=64,
    compare_batch=32,
    steps=20,
    scaling_configs="benchmarks/configs/st_link_cpu.py,configs/sth_sepnet_metrla.py:cpu,gpt2",
    scaling_nodes="200,1000,4300,8600",
    scaling_batch=8,
    scaling_batches="8,64",
    nodes_for_batch=325,
    scaling_steps=3,
    caps=dict(env=60, stjax_bf16=180, compare_f32=240, scaling=600),
  ),
  # CPU, toy sizes: every stage's command runs for real in seconds.
  "smoke": dict(
    config="benchmarks/configs/st_link_cpu.py",
    sets=[
      "model.n_embd=32",
      "model.n_head=2",
      "model.llm_layers=2",
      "model.unfrozen_layers=1",
      "model.trainable=pfa(1)",
      "model.temporal_dims=8",
      "model.embed_dim=8",
      "model.memory_size=8",
      "model.memory_key_dim=8",
      "model.expert_hidden=16",
    ],
    nodes=6,
    batch=2,
    compare_batch=2,
    steps=2,
    scaling_configs="benchmarks/configs/st_link_cpu.py",
    scaling_nodes="6,12",
    scaling_batch=2,
    scaling_batches="2",
    nodes_for_batch=6,
    scaling_steps=1,
    caps=dict(env=60, stjax_bf16=120, compare_f32=180, scaling=300),
  ),
}
STAGES = ("env", "stjax_bf16", "compare_f32", "scaling")
MIN_STAGE_S = 20  # a stage is not started with less time left than this
BF16 = "train.compute_dtype=bfloat16"


def commands(p: dict, out: pathlib.Path) -> dict[str, list[str]]:
  """The command of every stage for preset p, outputs under out."""
  py, sets = sys.executable, [f"--config.{s}" for s in p["sets"]]
  return {
    "env": [py, str(pathlib.Path(__file__).resolve()), "--env"],
    "stjax_bf16": [
      py,
      "-m",
      "stjax.bench",
      f"--config={p['config']}",
      f"--nodes={p['nodes']}",
      f"--batch={p['batch']}",
      f"--steps={p['steps']}",
      "--data_batches=10",
      f"--config.{BF16}",
      *sets,
    ],
    "compare_f32": [
      py,
      "benchmarks/compare_torch.py",
      f"--config={p['config']}",
      f"--nodes={p['nodes']}",
      f"--batch={p['compare_batch']}",
      f"--steps={p['steps']}",
      "--nocompile",
      *sets,
    ],
    "scaling": [
      py,
      "benchmarks/scaling.py",
      f"--configs={p['scaling_configs']}",
      f"--nodes={p['scaling_nodes']}",
      f"--batch={p['scaling_batch']}",
      f"--batches={p['scaling_batches']}",
      f"--nodes_for_batch={p['nodes_for_batch']}",
      f"--steps={p['scaling_steps']}",
      f"--set={BF16}",
      "--timeout=150",
      *[f"--set={s}" for s in p["sets"]],
      f"--out_dir={out}",
    ],
  }


def environment() -> dict:
  """Devices and versions of this machine (the `env` stage, in its own process)."""
  import platform
  import shutil
  import subprocess

  import jax

  env = {
    "python": platform.python_version(),
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "devices": [d.device_kind for d in jax.devices()],
  }
  try:
    import torch

    env.update(torch=torch.__version__, torch_cuda=torch.cuda.is_available())
  except ImportError:
    env["torch"] = None
  if shutil.which("nvidia-smi"):
    env["nvidia_smi"] = subprocess.run(
      ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
      capture_output=True,
      text=True,
    ).stdout.strip()
  return env


def run_suite(preset: str, out: pathlib.Path, budget_s: float, stages=STAGES) -> dict:
  """Runs the stages within budget_s seconds; after every stage (a cut-off call keeps what ran)
  writes suite.log, summary.json and summary.md. Returns the summary."""
  p = PRESETS[preset]
  out.mkdir(parents=True, exist_ok=True)
  cmds = commands(p, out)
  deadline = time.monotonic() + budget_s
  summary = {"preset": preset, "budget_s": budget_s, "stages": {}}
  log = []
  for name in stages:
    left = deadline - time.monotonic()
    if left < MIN_STAGE_S:
      summary["stages"][name] = {"status": "skipped", "error": f"budget: {left:.0f} s left"}
    else:
      summary["stages"][name] = run_stage(name, cmds[name], min(p["caps"][name], left), p, out, log)
    (out / "suite.log").write_text("".join(log))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(summary_markdown(summary, p))
  return summary


def run_stage(name: str, cmd: list[str], timeout: float, p: dict, out: pathlib.Path, log: list[str]) -> dict:
  """One stage's process -> its result with status and seconds; appends its output to log."""
  start = time.monotonic()
  result, text = scaling.run_json(cmd, timeout)
  log.append(f"### {name} (timeout {timeout:.0f} s)\n{text}\n")
  status = (
    "ok" if "error" not in result else ("timeout" if result["error"].startswith("timeout") else "failed")
  )
  result = {"status": status, "seconds": round(time.monotonic() - start, 1), **result}
  if name == "scaling":  # the points measured before a timeout or failure still make the curves
    if (out / scaling.PARTIAL).exists():
      points = json.loads((out / scaling.PARTIAL).read_text())
      scaling.write_outputs(points, out, p["scaling_batch"], p["nodes_for_batch"])
      result.update(points=len(points), points_ok=sum("error" not in q for q in points))
  return result


def _fmt(v) -> str:
  return "n/a" if v is None else f"{v:.4g}"


def _gib(b) -> str:
  return f"{b / 2**30:.3g} GiB" if b else "n/a"


def _met(ok) -> str:
  return "n/a" if ok is None else ("yes" if ok else "**no**")


def summary_markdown(summary: dict, p: dict) -> str:
  """The checks of issue 8 (value, target, met) and a table of the stages."""
  from stjax.tables import markdown_table

  st = summary["stages"]
  env, bf16, cmp_, sc = (st.get(k, {}) for k in STAGES)
  checks = []
  if bf16.get("status") == "ok":
    mfu, data, rate = bf16.get("mfu"), bf16.get("data_samples_per_s"), bf16["samples_per_s"]
    checks += [
      dict(check=f"ST-LINK N={p['nodes']} B={p['batch']} bf16 step (s)", value=bf16["step_time_s"]),
      dict(
        check="compile (s) / FLOPs per step",
        value=f"{bf16['compile_time_s']:.0f} / {_fmt(bf16.get('flops_per_step'))}",
      ),
      dict(
        check="MFU bf16 (%)",
        value=None if mfu is None else 100 * mfu,
        target=">= 40",
        met=_met(None if mfu is None else mfu >= 0.40),
      ),
      dict(check="stjax bf16 peak memory", value=_gib(bf16.get("peak_memory_bytes"))),
      dict(
        check="data pipeline alone vs the step (samples/s)",
        value=f"{_fmt(data)} vs {_fmt(rate)}",
        target="pipeline faster",
        met=_met(data > rate if data else None),
      ),
    ]
  rows = {r["framework"]: r for r in cmp_.get("rows", [])}
  jx, eager = rows.get("stjax (jax.jit)"), rows.get("torch eager")
  if jx and eager:
    mj, mt = jx.get("peak_memory_bytes"), eager.get("peak_memory_bytes")
    checks += [
      dict(
        check=f"stjax / torch eager, float32 B={p['compare_batch']}",
        value=f"{jx['vs_torch_eager']:.3f} ({jx['step_time_s']:.4f} vs {eager['step_time_s']:.4f} s)",
        target="<= 0.5",
        met=_met(jx["vs_torch_eager"] <= 0.5),
      ),
      dict(
        check="peak memory stjax vs torch eager, float32",
        value=f"{_gib(mj)} vs {_gib(mt)}",
        target="stjax <= torch",
        met=_met(None if not (mj and mt) else mj <= mt),
      ),
    ]
  if "points" in sc:
    checks.append(dict(check="scaling points measured", value=f"{sc['points_ok']} of {sc['points']}"))
  stages = [
    dict(stage=k, status=r["status"], seconds=r.get("seconds", ""), error=r.get("error", ""))
    for k, r in st.items()
  ]
  title = (
    f"# GPU suite ({summary['preset']}): {', '.join(env.get('devices', ['?']))}; "
    f"jax {env.get('jax', '?')}, torch {env.get('torch', '?')}"
  )
  check_table = markdown_table(
    [{"target": "", "met": "", **c} for c in checks],
    [("check", "check"), ("value", "value"), ("target", "target"), ("met", "met")],
  )
  stage_table = markdown_table(stages, [(k, k) for k in ("stage", "status", "seconds", "error")])
  return f"{title}\n\n{check_table}\n\n{stage_table}\n"


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--preset", choices=sorted(PRESETS), default="gpu")
  ap.add_argument("--out_dir", default="runs/gpu_suite")
  ap.add_argument("--budget_s", type=float, default=480, help="wall seconds for all stages together")
  ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
  ap.add_argument(
    "--env", action="store_true", help="print this machine's devices and versions as JSON (a stage)"
  )
  a = ap.parse_args(argv)
  if a.env:
    print(json.dumps(environment()))
    return 0
  stages = [s for s in a.stages.split(",") if s]
  bad = [s for s in stages if s not in STAGES]
  if bad:
    ap.error(f"--stages: unknown {', '.join(bad)} (choose from {', '.join(STAGES)})")
  out = pathlib.Path(a.out_dir)
  summary = run_suite(a.preset, out, a.budget_s, stages)
  print((out / "summary.md").read_text(), end="")
  return 0 if all(r["status"] == "ok" for r in summary["stages"].values()) else 1


if __name__ == "__main__":
  sys.exit(main())
