"""The one table formatter: rows of dicts -> a markdown table (results, baselines, benchmarks)."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence


def format_value(value: Any, key: str = "") -> str:
  """None -> "n/a"; floats to 4 significant digits (inf/nan as themselves); anything else str()."""
  del key
  if value is None:
    return "n/a"
  if isinstance(value, float):
    return f"{value:.4g}" if math.isfinite(value) else str(value)
  return str(value)


def markdown_table(
  rows: Sequence[dict[str, Any]],
  columns: Sequence[tuple[str, str]],
  fmt: Callable[[Any, str], str] = format_value,
) -> str:
  """A markdown table of `rows` with (key, header) columns; `fmt(value, key)` writes each cell."""
  lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
  for row in rows:
    lines.append("| " + " | ".join(fmt(row.get(k), k) for k, _ in columns) + " |")
  return "\n".join(lines)


def metric_value(value: Any, key: str) -> str:
  """Forecast metrics: MAE/RMSE with 4 decimals, MAPE/WAPE (percent) with 2; other cells as is."""
  if isinstance(value, float) and key.split("/")[-1] in ("mae", "rmse"):
    return f"{value:.4f}"
  if isinstance(value, float) and key.split("/")[-1] in ("mape", "wape"):
    return f"{value:.2f}"
  return format_value(value, key)
