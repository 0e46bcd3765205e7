#!/usr/bin/env bash
# Start (or remove) the benchmark's t3.small-shaped hosts: Debian 12 systemd
# containers from the same image as `make demo`, each with /var on its own
# ext4 file system on a loop device, so /proc/diskstats of that device counts
# every write the host makes to it, page-cache writeback included (cgroup v1
# blkio misses writeback). With --split-pgdata, /var/lib/postgresql gets a
# loop device of its own as well (the calibration point: Postgres alone).
#
#   bench/hosts.sh up NAME... [--split-pgdata]   start them (idempotent)
#   bench/hosts.sh down NAME...                  remove containers, unmount, detach
#   bench/hosts.sh attach NAME...                give running containers started by someone
#                                                else (molecule/cluster's) the same counted /var
#   bench/hosts.sh devices NAME                  "MOUNTPOINT DEVICE" lines, e.g. "/var loop3"
#
# Names are container names (<prefix>-bench-*, shoestring-bench-* by default; attach takes
# molecule/cluster's <prefix>-cluster-* too). Images and mounts live in
# BENCH_STATE_DIR (default /var/tmp/shoestring-bench). Ports: https on an
# ephemeral 127.0.0.1 port only (`docker port NAME 443`).
set -Eeuo pipefail

# shellcheck source=molecule/image/t3small.sh
. "$(dirname "$0")/../molecule/image/t3small.sh"
IMAGE="$T3SMALL_IMAGE"
STATE_DIR="${BENCH_STATE_DIR:-/var/tmp/shoestring-bench}"
# Sparse files: only what is written takes space. /var holds apt's cache, the
# journal, Redis and (unless split) Postgres.
VAR_SIZE="${BENCH_VAR_SIZE:-6G}"
PG_SIZE="${BENCH_PG_SIZE:-4G}"
# 2 GiB for the appliance + fakesky_memory_max_mb (1536) for the fake network.
BENCH_HOST_MEMORY="${BENCH_HOST_MEMORY:-3584m}"

usage() {
  echo "usage: $0 up NAME... [--split-pgdata] | down NAME... | attach NAME... | devices NAME" >&2
  exit 2
}

check_name() {
  [[ "$1" =~ ^[a-z0-9][a-z0-9-]*-(bench|cluster)-[a-z0-9-]+$ ]] || {
    echo "bench host names must look like <prefix>-bench-<name> or <prefix>-cluster-<name>, got '$1'" >&2
    exit 2
  }
}

# The loop device backing an image file, if attached.
loop_of() {
  losetup -j "$1" -O NAME -n 2>/dev/null | head -n1 | tr -d ' '
}

# Make, attach and mount an ext4 image; prints nothing. Idempotent.
make_fs() {
  local image="$1" mountpoint="$2" size="$3" dev
  mkdir -p "$mountpoint"
  if mountpoint -q "$mountpoint"; then
    return
  fi
  if [[ ! -f "$image" ]]; then
    truncate -s "$size" "$image"
    # Initialise inode tables and journal now: lazy init would write in the
    # background while the benchmark counts.
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$image"
  fi
  dev="$(loop_of "$image")"
  [[ -n "$dev" ]] || dev="$(losetup --find --show "$image")"
  # gp2 counts an I/O of up to 256 KiB as one: requests no larger than that
  # make the device's completed-write count the number gp2 would charge.
  echo 256 > "/sys/block/$(basename "$dev")/queue/max_sectors_kb"
  mount "$dev" "$mountpoint"
}

remove_fs() {
  local image="$1" mountpoint="$2" dev
  if mountpoint -q "$mountpoint"; then
    umount "$mountpoint"
  fi
  while dev="$(loop_of "$image")" && [[ -n "$dev" ]]; do
    losetup -d "$dev"
  done
  rm -f "$image"
  rmdir "$mountpoint" 2>/dev/null || true
}

down() {
  local name="$1" dir="$STATE_DIR/$1"
  docker rm -f "$name" >/dev/null 2>&1 || true
  # The Postgres file system is mounted inside /var's: unmount it first.
  remove_fs "$dir/pg.img" "$dir/pg"
  remove_fs "$dir/var.img" "$dir/var"
  rmdir "$dir" 2>/dev/null || true
  echo "bench host $name removed"
}

up() {
  local name="$1" split="$2" dir="$STATE_DIR/$1" state
  if [[ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" == true ]]; then
    echo "bench host $name is running"
    return
  fi
  # Whatever fails from here on leaves nothing behind.
  trap 'down "$name" >/dev/null 2>&1 || true' ERR
  docker rm -f "$name" >/dev/null 2>&1 || true
  mkdir -p "$dir"
  local fresh=0
  [[ -f "$dir/var.img" ]] || fresh=1
  make_fs "$dir/var.img" "$dir/var" "$VAR_SIZE"
  if [[ "$fresh" == 1 ]]; then
    # The image's own /var, owners and modes kept.
    docker run --rm --entrypoint tar "$IMAGE" -C /var -cpf - . | tar -C "$dir/var" -xpf -
  fi
  local volumes=(-v "$dir/var:/var")
  if [[ "$split" == 1 ]]; then
    make_fs "$dir/pg.img" "$dir/pg" "$PG_SIZE"
    volumes+=(-v "$dir/pg:/var/lib/postgresql")
  fi
  # A t3.small's 2 GiB for the appliance (memory_budget_total_mb) plus the fake network's
  # own MemoryMax (fakesky_memory_max_mb in inventory/bench/group_vars/bench.yml): the fake
  # keeps every block in memory, and it is not the appliance.
  t3small_run "$name" --label shoestring-bench=1 "${volumes[@]}" -p "127.0.0.1::443" \
    --memory "$BENCH_HOST_MEMORY" --memory-swap "$BENCH_HOST_MEMORY"
  state="$(t3small_booted "$name")"
  trap - ERR
  echo "bench host $name is up (systemd: $state; /var on $(loop_of "$dir/var.img"))"
}

# A container already running (molecule/cluster's, before converge): its /var copied onto a
# counted file system, mounted over /var in the container's own mount namespace (Docker adds
# no mount to a running container), journald moved onto it. Removed by `down`.
attach() {
  local name="$1" dir="$STATE_DIR/$1" pid dev
  if [[ -n "$(devices "$name")" ]]; then
    echo "bench host $name already has a counted /var"
    return
  fi
  trap 'down "$name" >/dev/null 2>&1 || true' ERR
  mkdir -p "$dir"
  make_fs "$dir/var.img" "$dir/var" "$VAR_SIZE"
  docker exec "$name" tar -C /var -cpf - . | tar -C "$dir/var" -xpf -
  dev="$(loop_of "$dir/var.img")"
  pid="$(docker inspect -f '{{.State.Pid}}' "$name")"
  # The device node made inside the container: the mount resolves paths in its namespace.
  nsenter -t "$pid" -m -- sh -c \
    "mknod /dev/bench-var b $(cut -d: -f1 "/sys/block/$(basename "$dev")/dev") $(cut -d: -f2 "/sys/block/$(basename "$dev")/dev") && mount /dev/bench-var /var"
  docker exec "$name" systemctl restart systemd-journald
  trap - ERR
  echo "bench host $name has a counted /var on $dev"
}

devices() {
  local dir="$STATE_DIR/$1" dev
  dev="$(loop_of "$dir/var.img")"
  [[ -n "$dev" ]] && echo "/var $(basename "$dev")"
  dev="$(loop_of "$dir/pg.img")"
  [[ -n "$dev" ]] && echo "/var/lib/postgresql $(basename "$dev")"
  return 0
}

command="${1:-}"
shift || usage
split=0
names=()
for arg in "$@"; do
  case "$arg" in
    --split-pgdata) split=1 ;;
    -*) usage ;;
    *) check_name "$arg"; names+=("$arg") ;;
  esac
done
[[ ${#names[@]} -gt 0 ]] || usage
case "$command" in
  up) for name in "${names[@]}"; do up "$name" "$split"; done ;;
  down) for name in "${names[@]}"; do down "$name"; done ;;
  attach) for name in "${names[@]}"; do attach "$name"; done ;;
  devices) devices "${names[0]}" ;;
  *) usage ;;
esac
