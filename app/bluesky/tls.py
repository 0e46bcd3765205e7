"""One TLS context per process for every client that calls the network.

httpx builds a new SSLContext for each client, loading the whole CA bundle from disk: in a
worker that makes a client per task that was about half of a batch's CPU (py-spy, make
bench-batch). The context holds only the trusted CAs and the verification settings, so one
serves every client, thread and connection of the process.
"""

import ssl
from functools import cache

import certifi


@cache
def tls_context() -> ssl.SSLContext:
    """Verifies certificates and host names against certifi's CAs, as httpx does by default."""
    return ssl.create_default_context(cafile=certifi.where())
