"""A local fake of the Bluesky network (entryway, PDS and AppView) for tests, the demo and
benchmarks. docs/fakesky.md says what it imitates, from which reference file, and what not.

Standard library only: it is deployed alone and run by the system python3 (python3 -m
fakesky). Not imported by the app, which only ever talks to it over HTTP, as to Bluesky.
"""
