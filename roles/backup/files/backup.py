#!/usr/bin/python3
"""Dump the app's database with pg_dump (custom format) into BACKUP_DIR, remove
dumps older than BACKUP_KEEP_DAYS (always keeping the newest), and copy the new
dump to S3 when BACKUP_S3_BUCKET is set. Run by shoestring-backup.service
(roles/backup), which gives it the PG* connection settings, the lowest CPU and
I/O priority and a sandbox that may write only BACKUP_DIR. Logs one line per
step with its numbers; exits non-zero, leaving no partial file, on failure."""

import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

SUFFIX = ".dump"


def log(message):
    print(f"backup: {message}", flush=True)


def dump(backup_dir, database, level, now):
    final = backup_dir / f"{database}-{now:%Y%m%dT%H%M%SZ}{SUFFIX}"
    partial = final.with_name(final.name + ".partial")
    started = time.monotonic()
    try:
        subprocess.run(
            [
                "pg_dump",
                "--format=custom",
                f"--compress={level}",
                "--no-password",
                f"--file={partial}",
                database,
            ],
            check=True,
        )
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        partial.rename(final)
        directory = os.open(backup_dir, os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        partial.unlink(missing_ok=True)
    size = final.stat().st_size
    log(
        f"wrote {final} ({size} bytes, {size / 1048576:.1f} MiB written to disk) "
        f"in {time.monotonic() - started:.1f}s"
    )
    return final


def prune(backup_dir, keep_days, now, newest):
    cutoff = now.timestamp() - keep_days * 86400
    removed = []
    for path in sorted(backup_dir.glob(f"*{SUFFIX}")):
        if path != newest and path.stat().st_mtime < cutoff:
            path.unlink()
            removed.append(path.name)
    kept = len(list(backup_dir.glob(f"*{SUFFIX}")))
    log(
        f"kept {kept} dumps of the last {keep_days} days, removed {len(removed)}"
        + (f": {', '.join(removed)}" if removed else "")
    )


def copy_to_s3(path, bucket, prefix, region, endpoint_url):
    import boto3  # python3-boto3, installed only on hosts with a bucket

    started = time.monotonic()
    client = boto3.client("s3", region_name=region, endpoint_url=endpoint_url or None)
    key = f"{prefix}{path.name}"
    client.upload_file(str(path), bucket, key, ExtraArgs={"ServerSideEncryption": "AES256"})
    log(f"copied to s3://{bucket}/{key} in {time.monotonic() - started:.1f}s")


def main():
    env = os.environ
    backup_dir = Path(env["BACKUP_DIR"])
    now = datetime.datetime.now(datetime.UTC)
    try:
        newest = dump(
            backup_dir, env["PGDATABASE"], int(env.get("BACKUP_COMPRESS_LEVEL", "6")), now
        )
    except (OSError, subprocess.CalledProcessError) as error:
        log(f"FAILED: no dump written: {error}")
        return 1
    prune(backup_dir, int(env.get("BACKUP_KEEP_DAYS", "7")), now, newest)
    bucket = env.get("BACKUP_S3_BUCKET", "")
    if bucket:
        try:
            copy_to_s3(
                newest,
                bucket,
                env.get("BACKUP_S3_PREFIX", ""),
                env.get("BACKUP_S3_REGION", "us-east-1"),
                env.get("BACKUP_S3_ENDPOINT_URL", ""),
            )
        except Exception as error:  # any failure of the copy fails the unit, saying why
            log(f"FAILED: the dump is on the host but not in s3://{bucket}: {error}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
