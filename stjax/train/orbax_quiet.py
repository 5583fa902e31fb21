"""Orbax failures as one line: its own logs and the late noise of a failed save or restore.

A failed orbax save or restore reaches the caller as one exception (which stjax turns into one
line), but orbax also logs it with tracebacks from its writer threads, and the other tensorstore
reads and writes of that call fail later, each printing a traceback of its own. `quiet_orbax()`
silences the first around a save or restore; the hooks it installs (once) drop the second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys


class _DropOrbaxLogs(logging.Filter):
  """Drops orbax's own logs: tracebacks from its writer threads (the failure reaches the caller
  as an exception, which becomes one line) and its notes on read-only managers."""

  def filter(self, record: logging.LogRecord) -> bool:
    return f"{os.sep}orbax{os.sep}" not in record.pathname


@contextlib.contextmanager
def quiet_orbax():
  """Orbax logs off for a save or restore, unless INFO logs were asked for (--verbosity=0)."""
  _ignore_late_callbacks()
  absl_logger = logging.getLogger("absl")
  if absl_logger.getEffectiveLevel() <= logging.INFO:
    yield
    return
  drop = _DropOrbaxLogs()
  absl_logger.addFilter(drop)
  try:
    yield
  finally:
    absl_logger.removeFilter(drop)


def _late_callback(e: BaseException | None) -> bool:
  return isinstance(e, RuntimeError) and str(e) == "Event loop is closed"


class _DropOrbaxOrphanTasks(logging.Filter):
  """asyncio's 'Task exception was never retrieved' for orbax's own write/read tasks."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (
      message.startswith("Task exception was never retrieved") and f"{os.sep}orbax{os.sep}" in message
    )


def _ignore_late_callbacks() -> None:
  """When an orbax save or restore fails, its other tensorstore reads and writes still complete
  afterwards: they post to orbax's event loop, closed by then (RuntimeError('Event loop is
  closed'), through sys.excepthook or sys.unraisablehook), and their failed asyncio tasks are
  logged as 'Task exception was never retrieved' when collected: dozens of tracebacks about the
  one failure the caller already reports in one line. Those, and only those, are dropped (the
  hooks and the filter are installed once per process)."""
  if getattr(sys.excepthook, "stjax_drops_late_callbacks", False):
    return
  previous_excepthook, previous_unraisablehook = sys.excepthook, sys.unraisablehook

  def excepthook(kind, value, traceback) -> None:
    if not _late_callback(value):
      previous_excepthook(kind, value, traceback)

  def unraisablehook(unraisable) -> None:
    if not _late_callback(unraisable.exc_value):
      previous_unraisablehook(unraisable)

  excepthook.stjax_drops_late_callbacks = True
  sys.excepthook, sys.unraisablehook = excepthook, unraisablehook
  logging.getLogger("asyncio").addFilter(_DropOrbaxOrphanTasks())
