#!/usr/bin/python3
"""Publish the newest dump's time and size for the node exporter's textfile collector:
shoestring_backup_last_success_timestamp_seconds and shoestring_backup_last_size_bytes
(Prometheus alerts when the time is older than a day). Run by shoestring-backup.service after a
dump succeeded (ExecStartPost=+, as root: the sandboxed backup user may not write the metrics
directory). Usage: backup_metric.py BACKUP_DIR TEXTFILE_DIR"""

import os
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile


def main(backup_dir, textfile_dir):
    dumps = sorted(Path(backup_dir).glob("*.dump"), key=lambda path: path.stat().st_mtime)
    if not dumps:
        print("backup metric: no dump to report", file=sys.stderr)
        return 1
    newest = dumps[-1].stat()
    registry = CollectorRegistry()
    Gauge(
        "shoestring_backup_last_success_timestamp_seconds",
        "When the newest good dump of the database was written (Unix time).",
        registry=registry,
    ).set(newest.st_mtime)
    Gauge(
        "shoestring_backup_last_size_bytes",
        "Size of the newest good dump of the database.",
        registry=registry,
    ).set(newest.st_size)
    Gauge("shoestring_backup_dumps_kept", "Dumps kept on this host.", registry=registry).set(
        len(dumps)
    )
    directory = Path(textfile_dir)
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = directory / "shoestring_backup.prom"
    write_to_textfile(str(path), registry)
    os.chmod(path, 0o644)  # the node exporter's user reads it; the unit's umask is 0077
    print(f"backup metric: {path} says {dumps[-1].name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
