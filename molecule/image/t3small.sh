# Beside build.sh, which makes the image. Sourced by inventory/local/container.sh
# (the demo) and bench/hosts.sh (the
# benchmark's hosts): the one definition of a t3.small-shaped Debian 12 systemd
# container, and of waiting for it to boot. (Molecule's molecule.yml states the
# same shape in its own YAML.)
T3SMALL_IMAGE="${SHOESTRING_IMAGE:-shoestring/debian12-systemd:1}"

# t3small_run NAME [docker run options...]: start it detached: 2 CPUs, 2 GiB RAM
# and no swap beyond that; systemd as PID 1 without --privileged (which fails
# here): SYS_ADMIN, the host's cgroup namespace, seccomp/apparmor unconfined.
t3small_run() {
  local name="$1"
  shift
  docker run -d --name "$name" --hostname "$name" \
    --cap-add SYS_ADMIN --cap-add NET_ADMIN --cgroupns=host \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
    --stop-signal SIGRTMIN+3 \
    --cpus 2 --memory 2g --memory-swap 2g \
    "$@" "$T3SMALL_IMAGE" >/dev/null
}

# t3small_booted NAME: wait up to 60 s for systemd to finish booting, then
# print its state (running, degraded, or what it was when the time ran out).
t3small_booted() {
  local state=""
  for _ in $(seq 1 60); do
    state="$(docker exec "$1" systemctl is-system-running 2>/dev/null || true)"
    [[ "$state" == running || "$state" == degraded ]] && break
    sleep 1
  done
  echo "${state:-unknown}"
}
