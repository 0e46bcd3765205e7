# Shoestring: the two commands an operator needs, and the pieces they are made of.
#   make demo   build a local t3.small-shaped container and provision it with site.yml
#               (NETWORK=fake, the default: the demo network, works offline;
#                NETWORK=bluesky: the real network, needs internet and a Bluesky account)
#   make test   lint, pytest and molecule test; what CI runs
#   make check  lint and the fast tests: the edit-test loop
#   make bench  the appliance against the seed's naive stack, on demand (docs/benchmarks.md)
#   make faults the fault suite on the tuned bench host, on demand
#   make bench-cluster  one workers host against two (molecule/cluster's hosts), on demand
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export PYTHONDONTWRITEBYTECODE := 1
export ANSIBLE_FORCE_COLOR := 0
export PY_COLORS := 0
HTTPS_PORT ?= 8443
SCENARIOS ?= default sqs
NETWORK ?= fake
BROWSER_DEPS := tests/browser/node_modules/.package-lock.json
MOLECULE_HOST ?= $(or $(SHOESTRING_MOLECULE_PREFIX),shoestring-molecule)-default
# make bench: minutes of load per host, people with campaigns, gp2 baseline IOPS.
BENCH_MINUTES ?= 10
BENCH_PEOPLE ?= 130
BENCH_IOPS ?= 100
export BENCH_MINUTES BENCH_PEOPLE BENCH_IOPS
# Every tree of Python the project holds, the scripts the roles install on hosts included.
PYTHON_TREES := app tests molecule bench roles
BENCH_HOSTS := $(addprefix $(or $(SHOESTRING_BENCH_PREFIX),shoestring)-bench-,tuned naive)

.PHONY: demo demo-down test test-pytest-sqs test-default lint check pytest molecule journey bench bench-calibrate bench-smoke bench-watch bench-batch bench-cluster faults deps system-packages docker venv browser-deps image

demo: deps image
	@case "$(NETWORK)" in fake|bluesky) ;; *) echo "NETWORK must be fake or bluesky, got '$(NETWORK)'" >&2; exit 2;; esac
	SHOESTRING_HTTPS_PORT=$(HTTPS_PORT) inventory/local/container.sh up
	ansible-playbook -i inventory/local site.yml \
	  -e '{"shoestring_demo_network": $(if $(filter fake,$(NETWORK)),true,false)}' \
	  -e shoestring_demo_public_origin=https://127.0.0.1:$(HTTPS_PORT)
	@curl -sfk -o /dev/null https://127.0.0.1:$(HTTPS_PORT)/healthz \
	  && echo "Shoestring answers at https://127.0.0.1:$(HTTPS_PORT)/ (self-signed certificate)"
	@if [ "$(NETWORK)" = fake ]; then \
	  echo "Demo network: a fake Bluesky inside the container; sign in with Bluesky as the demo account the banner names, block @crowd-3000.fake.test"; \
	else echo "Real network: sign up, then link your Bluesky handle and an app password"; fi

demo-down:
	inventory/local/container.sh down

# Two streams at once on the build machine's 2 cores, each printed whole when it ends
# (the pytest workers and the Molecule hosts mostly wait on each other's I/O and
# timers, so this saves about a quarter of the wall time): pytest then the sqs
# scenario, and the default scenario. Each stream prints its own wall time.
test: deps lint image
	@SECONDS=0; status=0; \
	  $(MAKE) --no-print-directory -j2 --output-sync=target test-pytest-sqs test-default \
	    || status=$$?; \
	  echo "make test: $$((SECONDS / 60)) min $$((SECONDS % 60)) s (exit $$status)"; exit $$status

test-pytest-sqs:
	@SECONDS=0; tests/run-pytest.sh; molecule test --scenario-name sqs; \
	  echo "pytest + molecule sqs: $$((SECONDS / 60)) min $$((SECONDS % 60)) s"

test-default:
	@SECONDS=0; molecule test --scenario-name default; \
	  echo "molecule default: $$((SECONDS / 60)) min $$((SECONDS % 60)) s"

# Lint needs the venv alone: no Docker, browser or npm.
lint: venv
	yamllint --strict .
	ansible-lint --profile production
	ruff check $(PYTHON_TREES)
	ruff format --check $(PYTHON_TREES)

pytest: deps image
	tests/run-pytest.sh

# The edit-test loop, a few minutes: lint, then the tests not marked slow (no live
# worker, playbook or host; Postgres and Redis are the machine's own packages).
check: lint system-packages
	tests/run-pytest.sh -m "not slow and not figures"

# One scenario alone: make molecule SCENARIOS=default
molecule: deps image
	for scenario in $(SCENARIOS); do molecule test --scenario-name $$scenario; done

# Both bench hosts, one after the other, under the same load; results in bench/results/
# and the latest table in docs/benchmarks.md replaced. The hosts are removed afterwards, also on failure.
bench: deps image
	python -m bench.run

# The calibration point of docs/benchmarks.md (Postgres on its own counted device).
bench-calibrate: deps image
	python -m bench.run --calibrate

# Every fault of the suite on the tuned host; the table goes to docs/benchmarks.md.
faults: deps image
	python -m bench.faults

# "Keep watching" on the tuned host: a newcomer's wait before its block (median, max) and
# the requests watching costs an hour, under 10 new followers a minute for 30 minutes.
bench-watch: deps image
	python -m bench.watch

# One workers host against two under the fake's real per-address limit: molecule/cluster's
# hosts built, measured and removed (docs/benchmarks.md, "Two workers hosts against one").
bench-cluster: deps image
	python -m bench.cluster

# What a batch's size costs (requests, CPU per block, a failed call's cost), for 50, 100
# and 200 writes a call, in this machine's pytest against the fake; prints a table.
bench-batch: deps
	tests/run-pytest.sh -m figures -s app/blocking/tests/test_batch_size_figures.py

# A short run (1 min of each host, a small load), then the quick faults on the tuned
# host; checks that everything was measured, never what the figures are. On demand.
bench-smoke: deps image
	trap 'bench/hosts.sh down $(BENCH_HOSTS)' EXIT; \
	BENCH_KEEP=1 python -m bench.run --smoke --hosts naive,tuned; \
	BENCH_REUSE=1 BENCH_KEEP=1 python -m bench.faults --quick

# The browser journey alone, against a converged host that is still up: the
# Molecule one (molecule converge -s default first) or the demo
# (make journey MOLECULE_HOST=shoestring-local). Screenshots: screenshots/journey/.
journey: deps
	pytest -s -p no:cacheprovider --hosts=docker://$(MOLECULE_HOST) \
	  molecule/default/tests/test_browser_journey.py

deps: system-packages docker venv browser-deps

system-packages:
	@missing=""; for pkg in docker.io debootstrap postgresql-15 postgresql-common redis-server openssl curl \
	    chromium chromium-driver; do \
	  dpkg-query -W -f='$${Status}\n' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v npm >/dev/null || { echo "installing: npm"; apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }

docker: system-packages
	@if ! docker info >/dev/null 2>&1; then \
	  echo "starting dockerd"; \
	  if [ -d /run/systemd/system ]; then systemctl start docker; \
	  else nohup dockerd >/var/log/dockerd.log 2>&1 & fi; \
	  for i in $$(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done; \
	  docker info >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt app/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

# axe-core for the browser journey, pinned by tests/browser/package-lock.json.
browser-deps: $(BROWSER_DEPS)

$(BROWSER_DEPS): tests/browser/package.json tests/browser/package-lock.json | system-packages
	npm ci --prefix tests/browser --no-audit --no-fund --ignore-scripts --loglevel=error

image: docker
	molecule/image/build.sh
