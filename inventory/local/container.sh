#!/usr/bin/env bash
# Start (or stop) the local Debian 12 systemd container that inventory/local
# targets, shaped like a t3.small: 2 CPUs, 2 GiB RAM, no swap beyond that.
# https and http are published on 127.0.0.1 only.
#   inventory/local/container.sh up     start it (idempotent)
#   inventory/local/container.sh down   remove it
set -euo pipefail

NAME=shoestring-local
IMAGE="${SHOESTRING_IMAGE:-shoestring/debian12-systemd:1}"
HTTPS_PORT="${SHOESTRING_HTTPS_PORT:-8443}"
HTTP_PORT="${SHOESTRING_HTTP_PORT:-8080}"

case "${1:-up}" in
  up)
    if [[ "$(docker inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" == true ]]; then
      echo "container $NAME is running"
      exit 0
    fi
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    docker run -d --name "$NAME" --hostname "$NAME" \
      --cap-add SYS_ADMIN --cap-add NET_ADMIN --cgroupns=host \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
      -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
      --stop-signal SIGRTMIN+3 \
      --cpus 2 --memory 2g --memory-swap 2g \
      -p "127.0.0.1:${HTTPS_PORT}:443" -p "127.0.0.1:${HTTP_PORT}:80" \
      "$IMAGE" >/dev/null
    # Wait for systemd to finish booting before Ansible talks to it.
    for _ in $(seq 1 60); do
      state="$(docker exec "$NAME" systemctl is-system-running 2>/dev/null || true)"
      [[ "$state" == running || "$state" == degraded ]] && break
      sleep 1
    done
    echo "container $NAME is up (systemd: ${state:-unknown})"
    ;;
  down)
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    echo "container $NAME removed"
    ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
