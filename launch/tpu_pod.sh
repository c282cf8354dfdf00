#!/usr/bin/env bash
# Create a Cloud TPU VM slice, install grm_jax on every worker, and run a job detached on all of them.
#
#   launch/tpu_pod.sh create NAME ZONE ACCELERATOR [--spot] [--queued] [--version V]
#         [--data-disk DISK [--data-disk-snapshot SNAPSHOT [--data-disk-type TYPE]]]
#       ACCELERATOR: v4-N, v5e-N (= gcloud's v5litepod-N), v5p-N or v6e-N; the TPU software version follows
#       from the generation unless --version is given. --queued asks through a queued resource (waits in
#       Google's queue for capacity instead of failing; setup once `gcloud compute tpus queued-resources
#       describe NAME --zone ZONE` says ACTIVE); --spot makes the VMs preemptible and cheaper.
#       --data-disk attaches the persistent disk DISK (a name in ZONE, or projects/P/zones/Z/disks/D) read-only to
#       every worker (gcloud's --data-disk source=...,mode=read-only): models and data too big for the workers'
#       100 GiB boot disks, stored once. --data-disk-snapshot first creates DISK (default NAME-data) from a disk
#       snapshot with `gcloud compute disks create` (pd-balanced; hyperdisk-ml, read-only-many, on v6e, which takes
#       no Persistent Disk; --data-disk-type to choose). A bare disk name needs the project: CLOUDSDK_CORE_PROJECT,
#       else gcloud's default project.
#   launch/tpu_pod.sh setup NAME ZONE [--mount-data-disk /data [--data-disk-device /dev/sdb]]
#         [--model-from gs://B/M --model-to /data/M] [--data-from gs://B/D --data-to /data/D] [--python 3.11]
#       Copies this checkout (without .git, .venv) to ~/grm_jax on every worker, installs uv, makes a Python 3.11
#       venv ~/grm_jax/.venv with uv and installs '.[tpu]' into it (versions: launch/constraints.txt).
#       --mount-data-disk mounts the read-only data disk (create --data-disk) at the same folder on every worker
#       (`mount -o ro,noload`: no journal replay, the disk is shared); the device is /dev/sdb, the first data disk,
#       unless --data-disk-device says otherwise.
#       --model-from / --data-from instead copy a GCS folder to the same local path on every worker's boot disk,
#       since each host reads the checkpoint (and the benchmark files) itself: pass --config.model.name=/data/M
#       (and --config.benchmark_root=/data/D) to the job. Models may also be read straight from gs:// (pass
#       --config.model.name=gs://B/M; no copy). Rerun setup after changing the code or after a restart.
#   launch/tpu_pod.sh run NAME ZONE [--run-name RUN] -- python -m grm_jax.main --config=... --workdir=gs://B/RUN
#       Starts the command under nohup on every worker and returns at once: it survives the end of this
#       session. python means the venv's python. Worker W logs to ~/grm_jax/logs/RUN.workerW.log on its own
#       disk; RUN defaults to the last path component of --workdir. The workdir must be gs://...: every host
#       writes to it and reads it back, and the workers share no filesystem.
#   launch/tpu_pod.sh status NAME ZONE              # the slice's state; per worker: running or exit status, last
#                                                   # log line
#   launch/tpu_pod.sh logs NAME ZONE [WORKER] [-f] [-n LINES]   # tail one worker's log (worker 0 by default)
#   launch/tpu_pod.sh stop NAME ZONE                # SIGTERM the job's process group on every worker, SIGKILL
#                                                   # after 30 s
#   launch/tpu_pod.sh delete NAME ZONE [--queued]   # --queued if it was created with --queued
#
# --dry-run (anywhere before --) or DRY_RUN=1 prints each command, shell-quoted after "+ ", and runs nothing.
# The project is gcloud's default one (gcloud config set project P, or CLOUDSDK_CORE_PROJECT=P). The workers'
# service account needs read access to the model bucket and write access to the workdir bucket.
# Multi-host start-up needs no flags: grm_jax.parallel.initialize_distributed() lets jax.distributed.initialize()
# find the slice's workers, process ids and coordinator in the TPU metadata.
set -euo pipefail
# Written for bash 3.2 as well (macOS's /bin/bash): no associative arrays, no ${x,,}, guarded empty arrays.

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "tpu_pod.sh: $*" >&2; exit 2; }

# One word quoted for a POSIX shell, left bare when it is safe, so that the dry run reads like the real command.
shq() {
  case $1 in
    '') printf "''" ;;
    *[!A-Za-z0-9_@%+=:,./-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;;
    *) printf '%s' "$1" ;;
  esac
}
shq_all() {
  local out='' w
  for w in "$@"; do out+="${out:+ }$(shq "$w")"; done
  printf '%s' "$out"
}

dry_run=${DRY_RUN:-0}
[ "$dry_run" = 0 ] || dry_run=1
# Everything after -- belongs to the job, so a --dry-run there is the job's own flag.
args=()
job=()
seen_sep=0
for a in "$@"; do
  if [ "$seen_sep" = 1 ]; then job+=("$a")
  elif [ "$a" = -- ]; then seen_sep=1
  elif [ "$a" = --dry-run ]; then dry_run=1
  elif [ "$a" = -h ] || [ "$a" = --help ]; then usage; exit 0
  else args+=("$a")
  fi
done
set -- ${args[@]+"${args[@]}"}
[ $# -ge 3 ] || { usage >&2; exit 2; }
cmd=$1 name=$2 zone=$3
shift 3

run_cmd() {
  if [ "$dry_run" = 1 ]; then echo "+ $(shq_all "$@")"; else "$@"; fi
}
gc() { run_cmd gcloud "$@"; }
ssh_workers() {  # ssh_workers WORKER SCRIPT: run SCRIPT with the login shell (bash) of worker WORKER or "all"
  gc compute tpus tpu-vm ssh "$name" --zone "$zone" --worker="$1" --command "$2"
}

# TPU software version per generation, from https://cloud.google.com/tpu/docs/runtimes ("PyTorch and JAX":
# v6e v2-alpha-tpuv6e, v5p v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite, v4 and older tpu-ubuntu2204-base).
# The images' own Python is older than the 3.11 grm_jax needs, which is why setup installs one with uv.
known_accels="v4-N, v5e-N (= v5litepod-N), v5p-N, v6e-N"
accelerator_type() {  # gcloud's name for the slice: v5e-N is spelled v5litepod-N there
  case $1 in
    v5e-[0-9]*) echo "v5litepod-${1#v5e-}" ;;
    *) echo "$1" ;;
  esac
}
runtime_version() {
  case $1 in
    v4-[0-9]*) echo tpu-ubuntu2204-base ;;
    v5litepod-[0-9]*) echo v2-alpha-tpuv5-lite ;;
    v5p-[0-9]*) echo v2-alpha-tpuv5 ;;
    v6e-[0-9]*) echo v2-alpha-tpuv6e ;;
    *) return 1 ;;
  esac
}

# Shell snippets run on the workers. They stay on one line so that the dry run prints one command per line.
# shellcheck disable=SC2016  # expanded by the worker's shell
worker_id='W=$(curl -sf -H "Metadata-Flavor: Google" '\
'http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number || hostname)'
# The job runs in its own session (setsid), so that its pid is also its process group: stop ends the python
# process and anything it forked, and no job is left holding the TPU for the next one.
# shellcheck disable=SC2016  # expanded by the worker's shell
latest_job='cd ~/grm_jax/logs 2>/dev/null && [ -f latest ] || { echo "worker $W: no job started"; exit 0; }'\
'; R=$(cat latest); P=$(cat "$R.pid")'

case $cmd in
  create)
    accel='' version='' spot=() queued=0 disk='' snapshot='' disk_type=''
    while [ $# -gt 0 ]; do
      case $1 in
        --spot) spot=(--spot) ;;
        --queued) queued=1 ;;
        --version) [ $# -ge 2 ] || die "--version needs a value"; version=$2; shift ;;
        --version=*) version=${1#--version=} ;;
        --data-disk | --data-disk-snapshot | --data-disk-type)
          [ $# -ge 2 ] || die "create: $1 needs a value"
          case $1 in --data-disk) disk=$2 ;; --data-disk-snapshot) snapshot=$2 ;; *) disk_type=$2 ;; esac
          shift ;;
        -*) die "create: unknown option $1" ;;
        *) [ -z "$accel" ] || die "create: one ACCELERATOR, got $accel and $1"; accel=$1 ;;
      esac
      shift
    done
    [ -n "$accel" ] || die "create: ACCELERATOR missing (one of $known_accels)"
    accel=$(accelerator_type "$accel")
    if [ -z "$version" ]; then
      version=$(runtime_version "$accel") ||
        die "unknown TPU generation in '$accel': known $known_accels (or give --version)"
    fi
    data_disk=() access=()
    if [ -n "$snapshot" ] || [ -n "$disk" ]; then
      [ -n "$disk" ] || disk="$name-data"
      [ -z "$disk_type" ] || [ -n "$snapshot" ] || die "create: --data-disk-type only applies with --data-disk-snapshot"
      if [ -n "$snapshot" ]; then
        [[ $disk != */* ]] || die "create: with --data-disk-snapshot, --data-disk is the new disk's name, got '$disk'"
        # v6e attaches Hyperdisk only, and a Hyperdisk is shared read-only once its access mode says so
        # (https://cloud.google.com/tpu/docs/setup-persistent-disk).
        case $accel in v6e-*) : "${disk_type:=hyperdisk-ml}" ;; *) : "${disk_type:=pd-balanced}" ;; esac
        case $disk_type in hyperdisk-*) access=(--access-mode READ_ONLY_MANY) ;; esac
      fi
      # The TPU API takes the disk's full path (AttachedDisk.source_disk); resolved before anything is created.
      source=$disk
      if [[ $disk != */* ]]; then
        project=${CLOUDSDK_CORE_PROJECT:-}
        if [ -z "$project" ] && [ "$dry_run" = 0 ]; then
          project=$(gcloud config get-value project 2>/dev/null || true)
        fi
        [ -n "$project" ] || die "create: --data-disk $disk needs the project: set CLOUDSDK_CORE_PROJECT or give" \
          "projects/P/zones/$zone/disks/$disk"
        source="projects/$project/zones/$zone/disks/$disk"
      fi
      if [ -n "$snapshot" ]; then
        gc compute disks create "$disk" --zone "$zone" --source-snapshot "$snapshot" --type "$disk_type" \
          ${access[@]+"${access[@]}"}
      fi
      data_disk=(--data-disk "source=$source,mode=read-only")
    fi
    if [ "$queued" = 1 ]; then
      gc compute tpus queued-resources create "$name" --node-id "$name" --zone "$zone" \
        --accelerator-type "$accel" --runtime-version "$version" ${spot[@]+"${spot[@]}"} \
        ${data_disk[@]+"${data_disk[@]}"}
    else
      gc compute tpus tpu-vm create "$name" --zone "$zone" --accelerator-type "$accel" --version "$version" \
        ${spot[@]+"${spot[@]}"} ${data_disk[@]+"${data_disk[@]}"}
    fi ;;

  setup)
    python_version=3.11 model_from='' model_to='' data_from='' data_to='' mount_at='' device=/dev/sdb
    while [ $# -gt 0 ]; do
      [ $# -ge 2 ] || die "setup: $1 needs a value"
      case $1 in
        --mount-data-disk) mount_at=$2 ;;
        --data-disk-device) device=$2 ;;
        --model-from) model_from=$2 ;;
        --model-to) model_to=$2 ;;
        --data-from) data_from=$2 ;;
        --data-to) data_to=$2 ;;
        --python) python_version=$2 ;;
        *) die "setup: unknown option $1" ;;
      esac
      shift 2
    done
    mount=''
    if [ -n "$mount_at" ]; then
      [[ $mount_at =~ ^/[A-Za-z0-9._/-]+$ ]] || die "setup: --mount-data-disk must be an absolute path, got '$mount_at'"
      [[ $device =~ ^/dev/[A-Za-z0-9._/-]+$ ]] || die "setup: --data-disk-device must be /dev/..., got '$device'"
      mount_at=${mount_at%/}
      # ro,noload: the disk is attached read-only to every worker, so ext4 must not replay its journal
      # (https://cloud.google.com/tpu/docs/setup-persistent-disk). A second setup finds it mounted.
      mount="; sudo mkdir -p $mount_at; mountpoint -q $mount_at || sudo mount -o ro,noload $device $mount_at"
    fi
    copies=''
    for pair in "$model_from|$model_to" "$data_from|$data_to"; do
      src=${pair%|*} dst=${pair#*|}
      [ -n "$src$dst" ] || continue
      # Checked here so that the paths need no quoting inside the remote script.
      [[ $src =~ ^gs://[A-Za-z0-9._/-]+$ ]] || die "setup: --model-from / --data-from must be gs://..., got '$src'"
      [[ $dst =~ ^/[A-Za-z0-9._/-]+$ ]] || die "setup: --model-to / --data-to must be an absolute path, got '$dst'"
      if [ -n "$mount_at" ]; then
        case $dst/ in
          "$mount_at"/*) die "setup: $dst is on the read-only data disk at $mount_at; copy elsewhere" ;;
        esac
      fi
      # /data is not writable by the ssh user; the copy is owned by that user so that the job can read it.
      copies+="; mkdir -p $dst 2>/dev/null || { sudo mkdir -p $dst && sudo chown \"\$(id -u):\$(id -g)\" $dst; }"
      copies+="; gcloud storage cp -r --no-clobber \"${src%/}/*\" $dst/"
    done
    [[ $python_version =~ ^3\.[0-9]+$ ]] || die "setup: --python wants e.g. 3.11, got '$python_version'"
    repo_dir=$(cd "$(dirname "$0")/.." && pwd)
    tarball="${TMPDIR:-/tmp}/grm_jax_src-$name.tgz"
    run_cmd tar -C "$repo_dir" --exclude=.venv --exclude=.git --exclude=__pycache__ --exclude='*.egg-info' \
      --exclude=.pytest_cache --exclude=.ruff_cache -czf "$tarball" .
    [ "$dry_run" = 1 ] || trap 'rm -f "$tarball"' EXIT
    gc compute tpus tpu-vm scp "$tarball" "$name:grm_jax_src.tgz" --zone "$zone" --worker=all
    # A venv that already exists is kept: setup then only updates the code and the packages. Every worker resolves
    # on its own: launch/constraints.txt (make constraints) pins them all to the versions the tests ran against.
    ssh_workers all "set -eu; mkdir -p ~/grm_jax/logs; tar -xzf ~/grm_jax_src.tgz -C ~/grm_jax; rm ~/grm_jax_src.tgz\
; export PATH=\"\$HOME/.local/bin:\$PATH\"; command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh\
; cd ~/grm_jax; [ -x .venv/bin/python ] || uv venv --python $python_version .venv\
; uv pip install --python .venv/bin/python -c launch/constraints.txt -e \".[tpu]\"$mount$copies\
; .venv/bin/python -c \"import sys, jax; print(sys.version.split()[0], jax.__version__)\"" ;;

  run)
    run_name=''
    while [ $# -gt 0 ]; do
      case $1 in
        --run-name) [ $# -ge 2 ] || die "--run-name needs a value"; run_name=$2; shift ;;
        --run-name=*) run_name=${1#--run-name=} ;;
        *) die "run: unknown option $1 (the job's command goes after --)" ;;
      esac
      shift
    done
    [ "$seen_sep" = 1 ] && [ ${#job[@]} -gt 0 ] ||
      die "run: give the job after --, e.g. run NAME ZONE -- python -m grm_jax.main ..."
    workdir=''
    prev=''
    for a in "${job[@]}"; do
      case $a in --workdir=*) workdir=${a#--workdir=} ;; esac
      [ "$prev" != --workdir ] || workdir=$a
      prev=$a
    done
    case $workdir in
      gs://*) ;;
      *) echo "tpu_pod.sh: warning: --workdir '$workdir' is not gs://...; every worker needs the same workdir" >&2 ;;
    esac
    if [ -z "$run_name" ]; then
      run_name=${workdir%/}
      run_name=${run_name##*/}
    fi
    run_name=$(printf '%s' "${run_name:-job}" | tr -c 'A-Za-z0-9._-' _)
    case ${job[0]} in python | python3) job[0]=.venv/bin/python ;; esac
    # The wrapper shell writes the exit status next to the pid file; status tells a finished job from a crash.
    # Returns once setsid has made the job its own process group (or it ended): a status or stop right after run
    # finds the group, not a pid whose group does not exist yet.
    ssh_workers all "set -eu; $worker_id; cd ~/grm_jax; mkdir -p logs\
; if [ -f logs/latest ] && P=\$(cat \"logs/\$(cat logs/latest).pid\" 2>/dev/null) && kill -0 -- \"-\$P\" 2>/dev/null\
; then echo \"worker \$W: job \$(cat logs/latest) still running (pid \$P); stop it first\" >&2; exit 1; fi\
; echo $run_name > logs/latest; rm -f logs/$run_name.rc; export PATH=\"\$HOME/grm_jax/.venv/bin:\$PATH\"\
; nohup setsid bash -c \"\\\"\\\$@\\\"; echo \\\$? > logs/$run_name.rc\" $run_name $(shq_all "${job[@]}")\
 > \"logs/$run_name.worker\$W.log\" 2>&1 < /dev/null &\
 P=\$!; echo \$P > logs/$run_name.pid\
; i=0; until kill -0 -- \"-\$P\" 2>/dev/null || [ -f logs/$run_name.rc ] || [ \$i -ge 100 ]; do sleep 0.05; i=\$((i+1)); done\
; echo \"worker \$W: started $run_name, pid \$P, log ~/grm_jax/logs/$run_name.worker\$W.log\"" ;;

  status)
    [ $# -eq 0 ] || die "status: unexpected $*"
    gc compute tpus tpu-vm describe "$name" --zone "$zone" --format="value(state,health)"
    # tqdm redraws its line with \r: the last of those is the current progress.
    ssh_workers all "$worker_id; $latest_job\
; if [ -f \"\$R.rc\" ]; then S=\"exited with status \$(cat \"\$R.rc\")\"\
; elif kill -0 -- \"-\$P\" 2>/dev/null; then S=\"running, pid \$P\"; else S=\"stopped or killed\"; fi\
; echo \"worker \$W: \$R \$S | \$(tail -c 2000 \"\$R.worker\$W.log\" 2>/dev/null | tr \"\\r\" \"\\n\" | tail -n 1)\"" ;;

  logs)
    worker=0 lines=100 follow=''
    while [ $# -gt 0 ]; do
      case $1 in
        -f | --follow) follow=' -F' ;;
        -n) [ $# -ge 2 ] || die "-n needs a value"; lines=$2; shift ;;
        [0-9]*) worker=$1 ;;
        *) die "logs: unknown argument $1" ;;
      esac
      shift
    done
    [[ $worker =~ ^[0-9]+$ && $lines =~ ^[0-9]+$ ]] || die "logs: WORKER and -n LINES are numbers"
    ssh_workers "$worker" "cd ~/grm_jax/logs && R=\$(cat latest) && tail -n $lines$follow \"\$R\".worker*.log" ;;

  stop)
    [ $# -eq 0 ] || die "stop: unexpected $*"
    ssh_workers all "$worker_id; $latest_job\
; if ! kill -0 -- \"-\$P\" 2>/dev/null; then echo \"worker \$W: \$R not running\"; exit 0; fi\
; kill -TERM -- \"-\$P\"; for _ in \$(seq 30); do kill -0 -- \"-\$P\" 2>/dev/null || break; sleep 1; done\
; kill -KILL -- \"-\$P\" 2>/dev/null || true; echo \"worker \$W: \$R stopped\"" ;;

  delete)
    queued=0
    while [ $# -gt 0 ]; do
      case $1 in
        --queued) queued=1 ;;
        *) die "delete: unknown option $1" ;;
      esac
      shift
    done
    if [ "$queued" = 1 ]; then
      # --force deletes the slice the queued resource holds along with the request.
      gc compute tpus queued-resources delete "$name" --zone "$zone" --force --quiet
    else
      gc compute tpus tpu-vm delete "$name" --zone "$zone" --quiet
    fi ;;

  *) die "unknown command '$cmd' (create, setup, run, status, logs, stop, delete; --help)" ;;
esac
