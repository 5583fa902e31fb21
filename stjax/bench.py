"""`python -m stjax.bench`: the benchmark CLI, kept at its documented name (code: stjax.perf.bench)."""

from stjax.perf.bench import *  # noqa: F401,F403

if __name__ == "__main__":
  from stjax.perf.bench import cli_main

  cli_main()
