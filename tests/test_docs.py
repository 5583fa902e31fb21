"""The docs stand on their own and name what exists: no pointer outside the repository, the paths
and dotted names of docs/architecture.md and the README exist, its rooms table names every module,
and docs/data_formats.md lists the registry's checksums."""

import importlib
import pathlib
import re

import pytest

from stjax.data import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
# Files a user does not have: the development machines' design notes and data folder.
OUTSIDE = re.compile(r"\.\./shared|shared/DESIGN|DESIGN\.md|STYLE\.md|ANCHORS\.md|PUBLISHED_CODE|SOURCES\.md")
# Repository paths such as `stjax/train/loop.py` or `configs/quickstart.py`.
PATH = re.compile(r"(?<![\w/.~<-])((?:stjax|benchmarks|configs|launch|docs|tests)/[\w/.-]*\w)")
DOTTED = re.compile(r"(?<![\w.])(stjax(?:\.\w+)+)")
INDEX_PAGES = [ROOT / "docs" / "architecture.md", ROOT / "README.md"]


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_no_pointer_outside_the_repository(page):
  lines = page.read_text().splitlines()
  hits = [f"{page.name}:{i}: {line.strip()}" for i, line in enumerate(lines, 1) if OUTSIDE.search(line)]
  assert not hits, hits


def _named(pattern: re.Pattern, pages) -> set[str]:
  """Every match in `pages`, except templates such as `tests/test_<module>.py`."""
  out = set()
  for page in pages:
    text = page.read_text()
    out |= {m.group(1).rstrip(".") for m in pattern.finditer(text) if text[m.end() : m.end() + 1] != "<"}
  return out


def test_index_pages_name_existing_paths():
  missing = sorted(p for p in _named(PATH, INDEX_PAGES) if not (ROOT / p).exists())
  assert not missing, missing


def _resolves(name: str) -> bool:
  """`stjax.a.b.c`: the longest importable module prefix, then attributes."""
  parts = name.split(".")
  for i in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module(".".join(parts[:i]))
    except ModuleNotFoundError:
      continue
    for attr in parts[i:]:
      if not hasattr(obj, attr):
        return False
      obj = getattr(obj, attr)
    return True
  return False


def test_index_pages_name_existing_modules_and_objects():
  missing = sorted(n for n in _named(DOTTED, INDEX_PAGES) if not _resolves(n))
  assert not missing, missing


def _rooms() -> set[str]:
  """The files named in the first column of docs/architecture.md's rooms table; a bare `x.py` stands
  in the folder of the path before it."""
  text = (ROOT / "docs" / "architecture.md").read_text()
  table = text.split("## Rooms", 1)[1].split("\n## ", 1)[0]
  named = set()
  for line in table.splitlines():
    if not line.startswith("| `"):
      continue
    folder = ""
    for token in re.findall(r"`([^`]+)`", line[2:].split(" | ", 1)[0]):
      if token.startswith("stjax/"):
        folder = token if token.endswith("/") else token.rsplit("/", 1)[0] + "/"
      if token.endswith(".py"):
        named.add(token if token.startswith("stjax/") else folder + token)
  return named


def test_architecture_rooms_name_every_module():
  modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "stjax").rglob("*.py")}
  named = _rooms()
  assert not modules - named, sorted(modules - named)  # a module the rooms table does not name
  assert not named - modules, sorted(named - modules)  # a file named there that does not exist


def test_data_formats_lists_every_recorded_checksum():
  text = (ROOT / "docs" / "data_formats.md").read_text()
  missing = [
    (info.name, f.name)
    for info in registry.DATASETS.values()
    for f in info.files
    if f.sha256 and f.sha256 not in text
  ]
  assert not missing, missing
