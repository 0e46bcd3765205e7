#!/usr/bin/env bash
# Run the pytest suite against a throwaway PostgreSQL 15 cluster made by
# Debian's pg_virtualenv: it listens on localhost only, on a free port, and is
# removed when pytest exits. Arguments go to pytest.
#
# As root, pg_virtualenv always names its cluster 15/regress in the system
# locations and refuses to start when one exists. So runs on one machine take
# turns (a lock), and a regress cluster that pg_virtualenv made and a killed
# run left behind is dropped first; a regress cluster it did not make is kept
# and the run stops, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
exec 9>/run/lock/shoestring-pytest.lock
if ! flock --nonblock 9; then
  echo "run-pytest: another run holds /run/lock/shoestring-pytest.lock; waiting for it" >&2
  flock 9
fi
if [ -d /etc/postgresql/15/regress ]; then
  if [ -f /etc/postgresql/15/regress/.by_pg_virtualenv ]; then
    echo "run-pytest: dropping the cluster 15/regress a killed run left behind" >&2
    rm -f /etc/postgresql/15/regress/.by_pg_virtualenv
    if [ -f /etc/postgresql/15/regress/postgresql.conf ]; then
      pg_dropcluster --stop 15 regress  # removes the directory too
    else
      rmdir /etc/postgresql/15/regress
    fi
  else
    echo "run-pytest: a cluster 15/regress exists that pg_virtualenv did not make; move it away" >&2
    exit 2
  fi
fi
exec pg_virtualenv -v 15 pytest "$@"
