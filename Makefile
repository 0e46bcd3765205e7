# Shoestring: the two commands an operator needs, and the pieces they are made of.
#   make demo   build a local t3.small-shaped container and provision it with site.yml
#   make test   lint, pytest, molecule test and the benchmark's smoke; what CI runs
#   make bench  the appliance against the seed's naive stack (docs/benchmarks.md)
#   make faults the fault suite on the tuned bench host
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export PYTHONDONTWRITEBYTECODE := 1
export ANSIBLE_FORCE_COLOR := 0
export PY_COLORS := 0
HTTPS_PORT ?= 8443
SCENARIOS ?= default sqs
# make bench: minutes of load per host, people with campaigns, gp2 baseline IOPS.
BENCH_MINUTES ?= 10
BENCH_PEOPLE ?= 50
BENCH_IOPS ?= 100
export BENCH_MINUTES BENCH_PEOPLE BENCH_IOPS
BENCH_HOSTS := shoestring-bench-tuned shoestring-bench-naive

.PHONY: demo demo-down test lint pytest molecule bench bench-calibrate bench-smoke faults deps system-packages docker venv image

demo: deps image
	inventory/local/container.sh up
	ansible-playbook -i inventory/local site.yml
	@curl -sfk -o /dev/null https://127.0.0.1:$(HTTPS_PORT)/healthz \
	  && echo "Shoestring answers at https://127.0.0.1:$(HTTPS_PORT)/ (self-signed certificate)"

demo-down:
	inventory/local/container.sh down

test: deps lint pytest molecule bench-smoke

lint: deps
	yamllint --strict .
	ansible-lint --profile production
	ruff check app tests molecule bench
	ruff format --check app tests molecule bench

pytest: deps
	tests/run-pytest.sh

# One scenario alone: make molecule SCENARIOS=default
molecule: deps image
	for scenario in $(SCENARIOS); do molecule test --scenario-name $$scenario; done

# Both bench hosts, one after the other, under the same load; results in bench/results/
# and appended to docs/benchmarks.md. The hosts are removed afterwards, also on failure.
bench: deps image
	python -m bench.run

# The calibration point of docs/benchmarks.md (Postgres on its own counted device).
bench-calibrate: deps image
	python -m bench.run --calibrate

# Every fault of the suite on the tuned host; the table goes to docs/benchmarks.md.
faults: deps image
	python -m bench.faults

# make test's share: 60 s of both hosts under a small load, then the quick faults on the
# tuned host; checks that everything was measured, never what the figures are.
bench-smoke: deps image
	trap 'bench/hosts.sh down $(BENCH_HOSTS)' EXIT; \
	BENCH_KEEP=1 python -m bench.run --smoke --hosts naive,tuned; \
	BENCH_REUSE=1 BENCH_KEEP=1 python -m bench.faults --quick

deps: system-packages docker venv

system-packages:
	@missing=""; for pkg in docker.io debootstrap postgresql-15 postgresql-common redis-server openssl curl; do \
	  dpkg-query -W -f='$${Status}\n' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

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

image: docker
	molecule/image/build.sh
