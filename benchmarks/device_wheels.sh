#!/usr/bin/env bash
# Wheels of the Python packages stjax needs that the lent GPU machines' image lacks (its Python is
# 3.12, x86-64; jax, flax, optax, orbax, torch, transformers and h5py are there), downloaded into
# .whl/ (git-ignored) to travel with a device call: see benchmarks/gpu_suite.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  grain==0.2.18 array-record==0.8.6 portpicker==1.6.0 ml-collections==1.1.0 tensorboardX==2.6.5
