#!/usr/bin/env bash
# Start (or stop) the local Debian 12 systemd container that inventory/local
# targets, shaped like a t3.small: 2 CPUs, 2 GiB RAM, no swap beyond that.
# https and http are published on 127.0.0.1 only.
#   inventory/local/container.sh up     start it (idempotent)
#   inventory/local/container.sh down   remove it
set -euo pipefail

# shellcheck source=molecule/image/t3small.sh
. "$(dirname "$0")/../../molecule/image/t3small.sh"
NAME=shoestring-local
HTTPS_PORT="${SHOESTRING_HTTPS_PORT:-8443}"
HTTP_PORT="${SHOESTRING_HTTP_PORT:-8080}"

case "${1:-up}" in
  up)
    if [[ "$(docker inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" == true ]]; then
      echo "container $NAME is running"
      exit 0
    fi
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    t3small_run "$NAME" -p "127.0.0.1:${HTTPS_PORT}:443" -p "127.0.0.1:${HTTP_PORT}:80"
    # Wait for systemd to finish booting before Ansible talks to it.
    state="$(t3small_booted "$NAME")"
    echo "container $NAME is up (systemd: $state)"
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
