#!/usr/bin/env bash
# Run a grm_jax command on every worker of a Cloud TPU VM pod slice.
#
#   launch/tpu_pod.sh create  NAME ZONE ACCELERATOR [VERSION]   # e.g. my-pod us-central2-b v4-64
#   launch/tpu_pod.sh setup   NAME ZONE                         # copy this checkout, install on all workers
#   launch/tpu_pod.sh run     NAME ZONE -- python -m ...        # same command on all workers at once
#   launch/tpu_pod.sh delete  NAME ZONE
#
# Multi-host start-up needs no flags: grm_jax.parallel.initialize_distributed() lets
# jax.distributed.initialize() discover the pod (coordinator, process ids) from the TPU metadata.
set -euo pipefail
cmd=${1:?usage: tpu_pod.sh create|setup|run|delete NAME ZONE ...}; name=${2:?NAME}; zone=${3:?ZONE}; shift 3
repo_dir=$(cd "$(dirname "$0")/.." && pwd)
ssh_all() { gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$1"; }
case "$cmd" in
  create)
    accel=${1:?ACCELERATOR, e.g. v4-64}; version=${2:-tpu-ubuntu2204-base}
    gcloud compute tpus tpu-vm create "$name" --zone "$zone" --accelerator-type "$accel" --version "$version" ;;
  setup)
    tar -C "$repo_dir" --exclude=.venv --exclude=.git -czf /tmp/grm_jax_src.tgz .
    gcloud compute tpus tpu-vm scp /tmp/grm_jax_src.tgz "$name":~/ --zone "$zone" --worker=all
    ssh_all "mkdir -p ~/grm_jax && tar -xzf ~/grm_jax_src.tgz -C ~/grm_jax && cd ~/grm_jax && \
      python3 -m pip install -q -U pip && python3 -m pip install -q -e '.[tpu]'" ;;
  run)
    [ "${1:-}" = "--" ] && shift
    # printf %q keeps the user's quoting intact through ssh.
    ssh_all "cd ~/grm_jax && $(printf '%q ' "$@")" ;;
  delete)
    gcloud compute tpus tpu-vm delete "$name" --zone "$zone" --quiet ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
