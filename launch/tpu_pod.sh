#!/usr/bin/env bash
# Run one stjax command on every worker of a Cloud TPU VM pod slice.
#
#   launch/tpu_pod.sh create   NAME ZONE ACCELERATOR [RUNTIME]   # e.g. v5litepod-64 v2-alpha-tpuv5-lite
#   launch/tpu_pod.sh install  NAME ZONE [REPO_URL] [REF]        # clone/update stjax and pip install on all workers
#   launch/tpu_pod.sh run      NAME ZONE COMMAND...              # same command on every worker, in the repo
#   launch/tpu_pod.sh delete   NAME ZONE
#
# Example:
#   launch/tpu_pod.sh run my-pod us-central2-b python -m stjax.train \
#       --config=configs/st_link_pemsbay.py --workdir=/mnt/shared/runs/pemsbay   # a filesystem all workers share (e.g. Filestore/NFS)
# JAX discovers the pod itself (stjax.distributed sees TPU_WORKER_HOSTNAMES and calls
# jax.distributed.initialize()); each host reads its shard of every batch; host 0 writes logs.
set -euo pipefail
action=${1:?usage: $0 create|install|run|delete NAME ZONE ...}; name=${2:?NAME}; zone=${3:?ZONE}; shift 3
ssh_all() { gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command="$1"; }
case $action in
  create)
    accel=${1:?ACCELERATOR e.g. v5litepod-64}; runtime=${2:-v2-alpha-tpuv5-lite}
    gcloud compute tpus tpu-vm create "$name" --zone="$zone" --accelerator-type="$accel" --version="$runtime" ;;
  install)
    repo=${1:-https://github.com/stjax/stjax.git}; ref=${2:-main}
    ssh_all "set -e; if [ -d stjax ]; then git -C stjax fetch -q && git -C stjax checkout -q $ref && git -C stjax pull -q; \
             else git clone -q $repo stjax && git -C stjax checkout -q $ref; fi; \
             cd stjax && pip install -q -e . 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html" ;;
  run)
    (( $# > 0 )) || { echo "$0 run: give the command to run" >&2; exit 2; }
    printf -v cmd '%q ' "$@"
    ssh_all "cd stjax && $cmd" ;;
  delete)
    gcloud compute tpus tpu-vm delete "$name" --zone="$zone" --quiet ;;
  *) echo "$0: unknown action '$action' (create, install, run, delete)" >&2; exit 2 ;;
esac
