"""A local fake of the Bluesky XRPC API for tests, the demo and benchmarks.

Not imported by the app: the app only ever talks to it over HTTP, exactly as
it talks to the real network.
"""
