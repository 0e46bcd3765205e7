"""The part of the benchmark that runs inside a bench host, on the host's own python3
(standard library only): it makes the load as people would (the web pages over https on
the host's loopback), samples the host every second, and asks the fake network for the
truth. It prints one JSON object per line on stdout; the controller (bench.run) reads them.
"""
