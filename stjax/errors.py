"""User-facing errors: one clear line, a non-zero exit, no traceback.

Library code raises `UserError` for anything the user can fix (bad path, bad config, bad file);
command-line entry points wrap their `main` with `cli_entry` so such errors print as
`stjax: error: <message>` and exit with status 2. Bugs still raise with a full traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
  """An error caused by user input (file, flag, config); printed as one line."""


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int | None]:
  """Wraps a CLI main so `UserError` becomes one stderr line and exit code 2."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except UserError as e:
      print(f"stjax: error: {e}", file=sys.stderr)
      sys.exit(2)
    except KeyboardInterrupt:
      print("stjax: interrupted", file=sys.stderr)
      sys.exit(130)

  return wrapped
