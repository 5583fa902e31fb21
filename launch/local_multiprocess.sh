#!/usr/bin/env bash
# Start NUM_PROCESSES copies of COMMAND on this machine as one JAX cluster on CPU.
#
#   launch/local_multiprocess.sh NUM_PROCESSES DEVICES_PER_PROCESS COMMAND...
#   launch/local_multiprocess.sh 2 4 python -m stjax.train --config=configs/quickstart.py --workdir=runs/mp
#
# Each process gets DEVICES_PER_PROCESS simulated CPU devices; the coordinator listens on 127.0.0.1.
# stjax.distributed reads STJAX_COORDINATOR / STJAX_NUM_PROCESSES / STJAX_PROCESS_ID. Output of
# process i goes to stdout prefixed with [i]. Exits non-zero (and stops the others) if any fails.
set -uo pipefail
if (( $# < 3 )); then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS COMMAND..." >&2; exit 2
fi
num=$1; devices=$2; shift 2
[[ $num =~ ^[1-9][0-9]*$ && $devices =~ ^[1-9][0-9]*$ ]] || { echo "$0: NUM_PROCESSES and DEVICES_PER_PROCESS must be positive integers" >&2; exit 2; }
port=${STJAX_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; }
trap cleanup INT TERM
for (( i = 0; i < num; i++ )); do
  ( export STJAX_COORDINATOR=127.0.0.1:$port STJAX_NUM_PROCESSES=$num STJAX_PROCESS_ID=$i \
      JAX_PLATFORMS=cpu XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices"
    exec "$@" ) > >(sed -u "s/^/[$i] /") 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do
  if ! wait "$p"; then status=1; cleanup; fi
done
exit $status
