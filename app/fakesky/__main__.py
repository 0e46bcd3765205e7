"""python3 -m fakesky: run the fake Bluesky network in the foreground (the standard library and
jwcrypto: Debian's python3-jwcrypto).

Examples:
  python3 -m fakesky --port 8787 --account me.fake.test:app-pass
  python3 -m fakesky --target troll.fake.test:200000 --accounts 500 --indexing-delay-s 5
  python3 -m fakesky --post crowd-10.fake.test/3lpileon2abcd:2000:500:200:300
  python3 -m fakesky --target crowd:10000 --arrivals crowd-10000.fake.test:followers:600:10
  python3 -m fakesky --public-url https://pds.demo.test --oauth-client-fetch-via https://127.0.0.1:443
"""

import argparse
import contextlib
import io
import signal
import sys
import threading

from . import arrivals, posts
from . import config as settings
from .fake import FakeBluesky
from .server import serve


def _pair(text, second=str):
    first, separator, rest = text.partition(":")  # handles have no colon; passwords may
    if not separator or not first or not rest:
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE, got {text!r}")
    try:
        return first, second(rest)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from error


def _post(text):
    try:
        return posts.parse_seed(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _arrivals(text):
    try:
        return arrivals.parse_flag(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def parser():
    parser = argparse.ArgumentParser(
        prog="python3 -m fakesky",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        type=_pair,
        metavar="HANDLE:PASSWORD",
        help="an account (repeatable; kept across /_fake/reset)",
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        type=lambda text: _pair(text, int),
        metavar="NAME:FOLLOWERS",
        help="a target with computed followers: a bare name gives NAME-FOLLOWERS.fake.test,"
        " a handle (troll.example.com) is registered as it is (repeatable)",
    )
    parser.add_argument(
        "--post",
        action="append",
        default=[],
        type=_post,
        metavar=posts.SEED_FORMAT,
        help="a post of a known handle with computed likes, reposts, quotes and replies; RKEY is"
        " a TID (repeatable; kept across /_fake/reset)",
    )
    parser.add_argument(
        "--arrivals",
        action="append",
        default=[],
        type=_arrivals,
        metavar=arrivals.FLAG_FORMAT,
        help="new followers of a target (KIND followers, SUBJECT its handle) or likes, reposts,"
        " quotes or replies of a --post (SUBJECT its at:// URI) arriving from start-up,"
        " PER_MINUTE a minute; every BACKDATE_EVERYth one backdated to the end of the list"
        " (repeatable; restarted by /_fake/reset)",
    )
    parser.add_argument(
        "--state-file",
        metavar="PATH",
        help="keep accounts, sessions, records and limits across a restart: written when the"
        " fake stops (SIGTERM), read and removed when it starts again with the same settings",
    )
    parser.add_argument(
        "--accounts",
        type=int,
        default=0,
        metavar="N",
        help="seed N accounts user1.fake.test ... userN.fake.test for a load test",
    )
    parser.add_argument(
        "--accounts-password", default="fake-app-password", help="their app password"
    )
    settings.add_arguments(parser)
    return parser


def seed(fake, args):
    """The accounts, targets, posts and arrivals of the command line (kept across
    /_fake/reset)."""
    for handle, password in args.account:
        fake.add_account(handle, password, seed=True)
    for index in range(1, args.accounts + 1):
        fake.add_account(f"user{index}.fake.test", args.accounts_password, seed=True)
    for name, followers in args.target:
        target = fake.add_target(name, followers, seed=True)
        print(f"target {target.handle} {target.did} followers={target.count}", flush=True)
    for handle, rkey, counts in args.post:
        try:
            post = fake.add_post(handle, rkey, *counts, seed=True)
        except ValueError as error:
            raise ValueError(f"--post {handle}/{rkey}: {error}") from error
        numbers = " ".join(f"{n}={c}" for n, c in zip(posts.KIND_NAMES, counts, strict=True))
        print(f"post {post.uri} {numbers}", flush=True)
    for subject, kind, per_minute, backdate_every in args.arrivals:
        try:
            stream = fake.add_arrivals(subject, kind, per_minute, backdate_every, seed=True)
        except ValueError as error:
            raise ValueError(f"--arrivals {subject}:{kind}: {error}") from error
        print(
            f"arrivals {stream['subject']} {kind} per_minute={per_minute}"
            f" backdate_every={backdate_every} handles={stream['handles']}",
            flush=True,
        )


def same_seeds(restored, args, config):
    """Whether the saved state was seeded as this command line seeds: a changed --post,
    --target or --account starts afresh, as a changed setting does."""
    fresh = FakeBluesky(config)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # main() prints the seeds it makes
            seed(fresh, args)
    except ValueError:
        return False  # main() seeds again and reports the error
    return fresh.seeds == restored.seeds


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        config = settings.from_arguments(args)
    except ValueError as error:
        sys.exit(f"fakesky: {error}")
    restored = FakeBluesky.restore(args.state_file, config) if args.state_file else None
    if restored and not same_seeds(restored, args, config):
        print(f"state in {args.state_file} not restored: the seeds changed", flush=True)
        restored = None
    server, url = serve(args.host, args.port, config, fake=restored)
    fake = server.fake
    if restored:
        print(f"state restored from {args.state_file}: {len(fake.accounts)} accounts", flush=True)
    else:
        try:
            seed(fake, args)
        except ValueError as error:
            server.shutdown()
            sys.exit(f"fakesky: {error}")
    print(f"fake Bluesky at {url} (didDoc endpoint {config.public_url or url})", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait()
    server.shutdown()
    if args.state_file:
        fake.save(args.state_file)


if __name__ == "__main__":
    main()
