"""The broker as Celery's Redis transport (kombu) keeps it: one list per queue (LPUSH in,
BRPOP out, so the oldest message is at the tail), and the "unacked" hash with its
"unacked_index" sorted set (score: when a worker took the message) for messages workers
hold: running tasks, and countdown/ETA tasks waiting in a worker's memory until due.

A queued message carries no timestamp, so the age of the oldest one is measured: each
sample notes the newest message (the head) with the time it was seen; the oldest noted
message still in the list (LPOS) was queued at most one sample interval before that time.
"""

import socket
from collections import deque
from urllib.parse import unquote, urlsplit

from .host import env_setting

QUEUES = ("interactive", "bulk", "maintenance")
# kombu.transport.redis: queue names of priorities 3, 6 and 9 (0 is the plain name).
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
# Heads remembered per queue (bounded: a sample adds at most one).
_MAX_HEADS = 100_000


class RedisError(RuntimeError):
    pass


class Redis:
    """A minimal RESP2 client over one TCP connection (the host has no redis-py outside
    the app's venv, and the agent uses only the standard library)."""

    def __init__(self, url, timeout=5.0):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.db = int(parts.path.lstrip("/") or 0)
        self.timeout = timeout
        self._sock = self._file = None

    def _connect(self):
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._file = self._sock.makefile("rb")
        if self.password:
            # An ACL account (Celery's own, redis://celery:pw@...) or requirepass alone.
            credentials = [self.username, self.password] if self.username else [self.password]
            self._send("AUTH", *credentials)
        if self.db:
            self._send("SELECT", self.db)

    def close(self):
        if self._sock:
            self._sock.close()
        self._sock = self._file = None

    def _send(self, *args):
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self._sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self):
        line = self._file.readline()
        if not line:
            raise RedisError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self._file.read(size + 2)
            return data[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._reply() for _ in range(size)]
        raise RedisError(f"unexpected reply {line[:40]!r}")

    def command(self, *args):
        """Run one command; reconnects once if the connection was lost (broker restarted)."""
        for attempt in (1, 2):
            try:
                if self._sock is None:
                    self._connect()
                return self._send(*args)
            except (OSError, RedisError) as error:
                self.close()
                if attempt == 2 or (isinstance(error, RedisError) and "closed" not in str(error)):
                    raise RedisError(str(error)) from error
        raise AssertionError("unreachable")


class Broker:
    """Depth of each queue, the oldest queued message's age, and the messages workers hold."""

    def __init__(self, redis, queues=QUEUES):
        self.redis, self.queues = redis, queues
        self.heads = {queue: deque() for queue in queues}
        self.info_refused = False

    def _oldest_age(self, queue, now):
        heads = self.heads[queue]
        head = self.redis.command("LINDEX", queue, 0)
        if head is not None and (not heads or heads[-1][0] != head):
            heads.append((head, now))
            if len(heads) > _MAX_HEADS:
                heads.popleft()
        # Drop noted messages that workers took; the first one left is the oldest noted.
        while heads and self.redis.command("LPOS", queue, heads[0][0], "RANK", -1) is None:
            heads.popleft()
        return round(now - heads[0][1], 1) if heads else 0.0

    def sample(self, now):
        """None when the broker does not answer (it is down)."""
        try:
            depth, oldest = {}, {}
            for queue in self.queues:
                names = [queue] + [f"{queue}{_PRIORITY_SEPARATOR}{p}" for p in _PRIORITY_STEPS]
                depth[queue] = sum(self.redis.command("LLEN", name) for name in names)
                oldest[queue] = self._oldest_age(queue, now) if depth[queue] else 0.0
                if not depth[queue]:
                    self.heads[queue].clear()
            unacked = self.redis.command("HLEN", "unacked")
            first = self.redis.command("ZRANGE", "unacked_index", 0, 0, "WITHSCORES")
            held_for = round(now - float(first[1]), 1) if first else 0.0
        except RedisError:
            return None
        return {
            "depth": depth,
            "oldest_s": oldest,
            "unacked": unacked,
            "unacked_oldest_s": held_for,
            "used_memory": self._used_memory(),
        }

    def _used_memory(self):
        """Redis' own count of its memory; None where the account may not run INFO (Celery's
        account lacks the @dangerous commands, INFO among them)."""
        if self.info_refused:
            return None
        try:
            memory = self.redis.command("INFO", "memory").decode()
        except RedisError as error:
            self.info_refused = "NOPERM" in str(error)
            return None
        return next(
            (
                int(line.split(":")[1])
                for line in memory.splitlines()
                if line.startswith("used_memory:")
            ),
            None,
        )


def broker_url(config_dir="/etc/shoestring"):
    """The broker URL the host's Celery clients use, from the first of the app's
    environment files that names one (beat's, the pools' or the web app's)."""
    url = env_setting("CELERY_BROKER_URL", config_dir)
    if url:
        return url
    raise RuntimeError(f"no CELERY_BROKER_URL in {config_dir}/*.env")
