"""The layering of docs/architecture.md, checked: `lint-imports` passes on the package, refuses a
module that imports upward, and no module of stjax imports the tests or the benchmarks."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINT_IMPORTS = shutil.which("lint-imports") or str(pathlib.Path(sys.executable).parent / "lint-imports")


def _lint(cwd: pathlib.Path) -> subprocess.CompletedProcess:
  if not pathlib.Path(LINT_IMPORTS).exists():
    pytest.skip("lint-imports is not installed (pip install -e '.[test]')")
  env = {"PATH": str(pathlib.Path(sys.executable).parent), "PYTHONPATH": str(cwd)}
  return subprocess.run(
    [LINT_IMPORTS, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
  )


def _copy_tree(tmp_path: pathlib.Path) -> pathlib.Path:
  repo = tmp_path / "repo"
  for name in ("stjax", "benchmarks"):
    shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
  return repo


def test_layers_hold(tmp_path):
  r = _lint(_copy_tree(tmp_path))
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
  assert "BROKEN" not in r.stdout


@pytest.mark.parametrize(
  "module,line,contract",
  [
    ("stjax/models/upward.py", "from stjax.train import loop", "layers"),
    ("stjax/layers/upward.py", "from stjax.models import registry", "layers"),
    ("stjax/data/upward.py", "from stjax.models import registry", "data is independent"),
    ("stjax/models/reads_files.py", "from stjax.data import formats", "models never read files"),
    ("stjax/kernels/bench.py", "import benchmarks.gemm", "never imports the benchmarks"),
  ],
)
def test_an_upward_import_is_refused(tmp_path, module, line, contract):
  repo = _copy_tree(tmp_path)
  (repo / module).write_text(f'"""A deliberately wrong import."""\n\n{line}\n')
  r = _lint(repo)
  assert r.returncode != 0, r.stdout[-2000:]
  assert "BROKEN" in r.stdout and contract in r.stdout
  assert module[:-3].replace("/", ".") in r.stdout


def test_no_module_imports_tests():
  offenders = [
    str(p.relative_to(ROOT))
    for p in (ROOT / "stjax").rglob("*.py")
    if any(
      ln.startswith(("import tests", "from tests", "  import tests", "  from tests"))
      for ln in p.read_text().splitlines()
    )
  ]
  assert not offenders, offenders
