"""`python -m stjax.data list | download NAME | verify NAME | info PATH|NAME`.

- `list`: every registered dataset with nodes, steps, step, protocol and whether it is local.
- `download NAME`: fetch the missing files (resume, sha256) into `$STJAX_DATA` (default ~/.cache/stjax).
- `verify NAME`: re-hash the local files against the registry (a file with no recorded checksum is
  reported "unverified: no checksum recorded" and the command fails).
- `info PATH`: what a series or graph file holds (shape, time range, missing ratio, NaN/inf; nodes,
  non-zeros, symmetry, self-loops). A registered dataset name instead of a path shows the loaded
  dataset with its graph.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from stjax.data import registry
from stjax.errors import cli_entry


def _list() -> None:
  rows = [("name", "nodes", "steps", "step", "protocol", "local", "description")]
  for info in registry.DATASETS.values():
    found = registry.find_local(info.name)
    have = sum(p is not None for p in found.values())
    local = "yes" if have == len(found) else ("no" if have == 0 else f"{have}/{len(found)} files")
    rows.append(
      (
        info.name,
        str(info.nodes),
        str(info.steps or "?"),
        f"{info.step_minutes:g} min",
        info.protocol,
        local,
        info.description,
      )
    )
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
  for r in rows:
    print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
  print(f"\ndata dir: {registry.data_dir()}   shared data: {registry.shared_dir()}")


def _registry_options(path: pathlib.Path) -> dict:
  """Reader options of the registered dataset whose series file has this name (files without dates)."""
  matches = {
    repr(i.reader_options): i.reader_options for i in registry.DATASETS.values() if i.series == path.name
  }
  if len(matches) == 1:
    return dict(next(iter(matches.values())))
  return {}


def describe_series(dataset) -> list[str]:
  v = dataset.values
  t, n, c = v.shape
  nan, inf = int(np.isnan(v).sum()), int(np.isinf(v).sum())
  zeros = int((v == 0).sum())
  lines = [f"series {dataset.name}: {t} steps x {n} nodes x {c} channels ({', '.join(dataset.channels)})"]
  if dataset.timestamps is not None:
    ts = dataset.timestamps
    lines.append(f"  time: {ts[0]} .. {ts[-1]}, step {dataset.step_minutes:g} min")
  else:
    lines.append(f"  time: no dates in the file, step {dataset.step_minutes:g} min")
  lines.append(
    f"  missing ratio (zeros and NaN): {(zeros + nan) / v.size:.4%}  (zeros {zeros}, NaN {nan}, inf {inf})"
  )
  finite = np.where(np.isfinite(v), v, np.nan)
  for k, name in enumerate(dataset.channels):
    ch = finite[..., k]
    if np.isnan(ch).all():
      lines.append(f"  {name}: no finite values")
    else:
      lines.append(f"  {name}: min {np.nanmin(ch):.4g}, max {np.nanmax(ch):.4g}, mean {np.nanmean(ch):.4g}")
  if dataset.node_ids is not None:
    lines.append(f"  node ids: {', '.join(dataset.node_ids[:5])}{', ...' if n > 5 else ''}")
  if dataset.adjacency is not None:
    lines += ["  " + s for s in describe_graph(dataset.adjacency, "adjacency")]
  return lines


def describe_graph(adj: np.ndarray, name: str) -> list[str]:
  nz = adj != 0
  nan, inf = int(np.isnan(adj).sum()), int(np.isinf(adj).sum())
  off = nz & ~np.eye(adj.shape[0], dtype=bool)
  finite = adj[np.isfinite(adj) & nz]
  lines = [
    f"graph {name}: {adj.shape[0]} nodes, {int(nz.sum())} non-zeros "
    f"({int(off.sum())} edges + {int(np.diag(nz).sum())} self-loops)",
    f"  symmetric: {'yes' if np.array_equal(adj, adj.T, equal_nan=True) else 'no'}",
  ]
  if finite.size:
    lines.append(f"  weights: min {finite.min():.4g}, max {finite.max():.4g}; NaN {nan}, inf {inf}")
  return lines


def _info(target: str, options: dict) -> None:
  from stjax.data import formats  # noqa: PLC0415 (h5py import only when needed)

  path = pathlib.Path(target).expanduser()
  if not path.exists() and target in registry.DATASETS:
    print("\n".join(describe_series(registry.load(target))))
    return
  if formats.kind_of(path) == "graph":
    print("\n".join(describe_graph(formats.read_graph(path), str(path))))
    return
  opts = {} if path.is_dir() or path.suffix == ".h5" else _registry_options(path)
  opts.update({k: v for k, v in options.items() if v is not None})
  print("\n".join(describe_series(formats.read_series(path, **opts))))


@cli_entry
def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m stjax.data", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  sub.add_parser("list", help="registered datasets and whether they are local")
  p = sub.add_parser("download", help="fetch a dataset's files (resume, sha256)")
  p.add_argument("name")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p = sub.add_parser(
    "verify", help="re-hash a dataset's local files (fails on files with no recorded checksum)"
  )
  p.add_argument("name")
  p = sub.add_parser("info", help="describe a series or graph file (or a registered dataset)")
  p.add_argument("path")
  p.add_argument("--step-minutes", type=float, help="step length, for files without dates")
  p.add_argument("--start", help="date/time of step 0, for files without dates (e.g. 2016-07-01T00:00)")
  args = parser.parse_args(argv)
  if args.command == "list":
    _list()
  elif args.command == "download":
    from stjax.data import download  # noqa: PLC0415

    download.download(args.name, progress=not args.quiet)
  elif args.command == "verify":
    from stjax.data import download  # noqa: PLC0415

    download.verify(args.name)
  else:
    _info(args.path, {"step_minutes": args.step_minutes, "start": args.start})
  return 0


if __name__ == "__main__":
  main()
