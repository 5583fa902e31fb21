"""Graceful stops: SIGTERM (cluster preemption) and SIGINT (Ctrl-C) end training at a step boundary.

Inside `with GracefulStop() as stop:` the first SIGTERM or SIGINT only sets `stop.signum`; the
training loop polls it between steps, saves a checkpoint of the step it reached and raises
`TrainingStopped`, which the CLI turns into one line and exit status 128 + signal (143 for SIGTERM,
130 for SIGINT: what a shell reports for a process ended by that signal, and the exit code
Kubernetes shows for a container stopped by SIGTERM; non-zero, so restart policies rerun it). A
second SIGINT interrupts at once (KeyboardInterrupt), but never inside a checkpoint save: there it
waits for the save to finish, so no orbax thread is cut off mid-write.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

HANDLED = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(Exception):
  """Training stopped on a signal after saving checkpoint `step`."""

  def __init__(self, signum: int, step: int, checkpoint: str | None):
    self.signum, self.step, self.checkpoint = signum, step, checkpoint
    self.exit_code = 128 + signum
    name = signal.Signals(signum).name
    saved = f"saved {checkpoint}" if checkpoint else "nothing to save yet"
    super().__init__(f"stopped by {name} at step {step}; {saved}; run the same command again to resume")


class GracefulStop:
  """Installs the SIGTERM/SIGINT handlers for its `with` block (main thread only; elsewhere it
  does nothing and the signals keep their defaults) and restores the previous ones after."""

  def __init__(self):
    self.signum: int | None = None
    self._interrupts = 0
    self._in_save = False
    self._previous: dict[int, object] = {}

  def __enter__(self) -> "GracefulStop":
    if threading.current_thread() is threading.main_thread():
      for s in HANDLED:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()

  def _handle(self, signum, frame) -> None:
    if self.signum is None:
      self.signum = signum
    if signum == signal.SIGINT:
      self._interrupts += 1
      if self._interrupts > 1 and not self._in_save:
        raise KeyboardInterrupt

  @contextlib.contextmanager
  def saving(self) -> Iterator[None]:
    """A checkpoint save: a second Ctrl-C inside waits until the save is complete."""
    self._in_save = True
    try:
      yield
    finally:
      self._in_save = False
    if self._interrupts > 1:
      raise KeyboardInterrupt
