"""python -m fakesky --port 8787: run the fake Bluesky server in the foreground."""

import argparse
import time

from .server import Config, serve


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="HANDLE:PASSWORD",
        help="create an account at start (repeatable)",
    )
    args = parser.parse_args()
    server, url = serve(args.host, args.port, Config(latency_ms=args.latency_ms))
    for spec in args.account:
        handle, _, password = spec.partition(":")
        server.fake.add_account(handle, password)
    print(f"fake Bluesky at {url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
