"""Performance tools: they measure the trainer's own step and never hook into model code.

| module | command | what it does |
|---|---|---|
| `bench.py` | `python -m stjax.bench --config=...` | compile and time the train step; FLOPs, MFU, memory |
| `op_profile.py` | `python -m stjax.bench ... --profile_dir=DIR` | per-component op times from a trace |
| `compile_only.py` | `python -m stjax.compile_only --config=...` | size a sharded run (memory per device) |
"""
