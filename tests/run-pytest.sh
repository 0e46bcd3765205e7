#!/usr/bin/env bash
# Run the pytest suite against a throwaway PostgreSQL 15 cluster made by
# Debian's pg_virtualenv: it listens on localhost only, on a free port, and is
# removed when pytest exits. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
exec pg_virtualenv -v 15 pytest "$@"
