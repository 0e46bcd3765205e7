"""What the host's kernel and Postgres say, read from inside the host: the loop devices'
/proc/diskstats, each systemd unit's memory and CPU from its cgroup (v1), swap and OOM
counters, and Postgres' WAL and commit counters through one long-lived psql session."""

import contextlib
import os
import re
import select
import subprocess
import time
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
# /proc/diskstats columns after major, minor and name (Documentation/admin-guide/iostats).
_DISK_FIELDS = {"reads": 0, "read_sectors": 2, "writes": 4, "write_sectors": 6, "flushes": 15}
# memory.stat (cgroup v1) fields kept per unit; total_* include child cgroups.
_MEMORY_FIELDS = (
    "total_rss",
    "total_mapped_file",
    "total_shmem",
    "total_cache",
    "total_pgmajfault",
    "total_swap",
)


def diskstats(devices, path="/proc/diskstats"):
    """Cumulative counters of each named block device (e.g. "loop3")."""
    wanted, found = set(devices), {}
    with open(path) as stats:
        for line in stats:
            parts = line.split()
            if len(parts) < 4 or parts[2] not in wanted:
                continue
            numbers = [int(value) for value in parts[3:]]
            found[parts[2]] = {
                name: numbers[index] if index < len(numbers) else 0
                for name, index in _DISK_FIELDS.items()
            }
    missing = wanted - set(found)
    if missing:
        raise RuntimeError(f"no such block device in {path}: {', '.join(sorted(missing))}")
    return found


def vmstat(path="/proc/vmstat"):
    wanted = {"pswpin", "pswpout", "oom_kill"}
    values = {}
    with open(path) as stats:
        for line in stats:
            name, _, value = line.partition(" ")
            if name in wanted:
                values[name] = int(value)
    return values


def container_cgroup(proc_cgroup="/proc/1/cgroup"):
    """The container's own cgroup path, e.g. /docker/<id> (systemd runs in <it>/init.scope)."""
    for line in Path(proc_cgroup).read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path.removesuffix("/init.scope").rstrip("/") or "/"
    raise RuntimeError("no memory cgroup in /proc/1/cgroup (cgroup v1 expected)")


def _read_int(path):
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _memory_stat(directory):
    values = {}
    try:
        text = (directory / "memory.stat").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in _MEMORY_FIELDS:
            values[name.removeprefix("total_")] = int(value)
    try:
        for line in (directory / "memory.oom_control").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                values["oom_kill"] = int(value)
    except OSError:
        pass
    values["usage"] = _read_int(directory / "memory.usage_in_bytes")
    return values


_TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")


def cpu_ns(cgroup_dir):
    """CPU time of the processes in a cgroup, in ns: user + system of each, plus that of
    their exited, reaped children (a Postgres backend's goes to the postmaster). cgroup v1
    here mounts cpuacct apart from cpu, where systemd keeps no per-service accounting."""
    try:
        pids = (cgroup_dir / "cgroup.procs").read_text().split()
    except OSError:
        return None
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat.rpartition(")")[2].split()
        ticks += sum(int(value) for value in fields[11:15])
    return int(ticks * _TICK_NS)


class Cgroups:
    """Memory, CPU and OOM kills of every systemd service of this container, and in total."""

    def __init__(self, root=None, base=CGROUP):
        self.root = root or container_cgroup()
        self.memory = base / "memory" / self.root.lstrip("/")
        self.cpu = base / "cpuacct" / self.root.lstrip("/")
        self._units, self._listed = {}, 0.0

    def units(self):
        """{unit name: its cgroup path under the container's}; template units (postgresql@)
        sit in a sub-slice such as system.slice/system-postgresql.slice."""
        found = {}
        for directory in sorted((self.memory / "system.slice").rglob("*.service")):
            if directory.is_dir():
                found[directory.name.removesuffix(".service")] = directory.relative_to(self.memory)
        return found

    def sample(self):
        if time.monotonic() - self._listed > 10:  # units come and go rarely: list every 10 s
            self._units, self._listed = self.units(), time.monotonic()
        services = {}
        for unit, relative in self._units.items():
            memory = _memory_stat(self.memory / relative)
            if memory is None:
                continue  # the unit stopped between listing and reading
            memory["cpu_ns"] = cpu_ns(self.memory / relative)
            services[unit] = memory
        whole = _memory_stat(self.memory) or {}
        whole["cpu_ns"] = _read_int(self.cpu / "cpuacct.usage")
        whole["limit"] = _read_int(self.memory / "memory.limit_in_bytes")
        return {"services": services, "container": whole}


class Psql:
    """One psql session as the postgres superuser (peer auth on the unix socket), kept open
    so a sample costs one round trip, not a new backend. Reconnects after Postgres restarts."""

    END = "__bench_end__"
    _ERRORS = (
        "ERROR:",
        "FATAL:",
        "psql:",
        "server closed",
        "connection to server",
        "The connection",
        "could not",
        "\t",
    )

    def __init__(self, database="shoestring", timeout=5.0):
        self.database, self.timeout = database, timeout
        self.process, self._buffer = None, b""

    def _start(self):
        self.process = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-At", "-d", self.database],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._buffer = b""

    def close(self):
        if self.process and self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def _line(self, deadline):
        """The next line psql printed, reading the pipe unbuffered so select() stays true."""
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return ""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")

    def query(self, sql):
        """Rows as lists of strings; raises RuntimeError if Postgres did not answer."""
        if self.process is None or self.process.poll() is not None:
            self._start()
        try:
            self.process.stdin.write(f"{sql.strip().rstrip(';')};\n\\echo {self.END}\n".encode())
            self.process.stdin.flush()
        except OSError as error:
            self.close()
            raise RuntimeError(f"psql: {error}") from error
        rows, errors, deadline = [], [], time.monotonic() + self.timeout
        while True:
            line = self._line(deadline)
            if line is None or line == "":
                self.close()
                why = "no answer in time" if line is None else "the session ended"
                raise RuntimeError(f"psql: {why}: " + " ".join(errors)[:300])
            if line == self.END:
                break
            if line.startswith(self._ERRORS):
                errors.append(line.strip())
            else:
                rows.append(line.split("|"))
        if errors:
            raise RuntimeError("psql: " + " ".join(errors)[:300])
        return rows

    def value(self, sql):
        rows = self.query(sql)
        return rows[0][0] if rows and rows[0] else None


def env_setting(name, config_dir="/etc/shoestring", files="*.env"):
    """A setting's value from the first of the app's environment files (in name order)
    that names it, its quotes taken off; None if none does."""
    for env_file in sorted(Path(config_dir).glob(files)):
        for line in env_file.read_text().splitlines():
            key, _, value = line.strip().partition("=")
            if key == name:
                return value.strip().strip('"')
    return None


_NAME = re.compile(r"[A-Za-z0-9_.@+-]+")


def sql_list(values):
    """An SQL list literal of integers or plain names (psql takes no query parameters)."""
    items = []
    for value in values:
        if isinstance(value, int):
            items.append(str(value))
        elif _NAME.fullmatch(value):
            items.append(f"'{value}'")
        else:
            raise ValueError(f"not a plain name: {value!r}")
    return "(" + ",".join(items) + ")"


STATS_SQL = """
SELECT w.wal_records, w.wal_fpi, w.wal_bytes, w.wal_write, w.wal_sync,
       d.xact_commit, d.xact_rollback, d.tup_inserted, d.tup_updated, d.tup_deleted,
       b.checkpoints_timed + b.checkpoints_req, b.buffers_checkpoint, b.buffers_backend,
       (SELECT coalesce(sum(acted), 0) FROM blocking_campaign),
       (SELECT count(*) FROM blocking_campaign WHERE status = 'running')
FROM pg_stat_wal w, pg_stat_database d, pg_stat_bgwriter b
WHERE d.datname = current_database()
"""
STATS_FIELDS = (
    "wal_records",
    "wal_fpi",
    "wal_bytes",
    "wal_write",
    "wal_sync",
    "xact_commit",
    "xact_rollback",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
    "checkpoints",
    "buffers_checkpoint",
    "buffers_backend",
    "app_acted",
    "campaigns_running",
)


def postgres_stats(psql):
    """WAL, commit and checkpoint counters, and blocks the app counts as done; None if down."""
    try:
        rows = psql.query(STATS_SQL)
    except RuntimeError:
        return None
    if not rows or len(rows[0]) != len(STATS_FIELDS):
        return None
    return {name: int(float(value)) for name, value in zip(STATS_FIELDS, rows[0], strict=True)}


def flush(psql, mountpoints):
    """Write out what the page cache and Postgres still hold: CHECKPOINT, then sync each
    counted file system, so that deferred writes of the run are counted too."""
    with contextlib.suppress(RuntimeError):
        psql.query("CHECKPOINT")
    for mountpoint in mountpoints:
        subprocess.run(["sync", "-f", mountpoint], check=False, timeout=120)
