"""The benchmark and fault suite of the appliance (docs/benchmarks.md).

bench/hosts.sh starts the hosts, bench.run measures them, bench.faults injects faults;
bench/agent runs inside each host (standard library only) to make the load and sample;
bench.docs puts a run's tables in docs/benchmarks.md in place of the previous ones.
"""
