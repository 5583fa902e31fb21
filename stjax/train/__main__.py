"""`python -m stjax.train --config=configs/X.py[:variant] [--workdir=DIR]` (stjax.train.cli)."""

from stjax.train.cli import run_main

run_main()
