"""Serve the app's metrics (`core.exporter`) on a loopback address for the local Prometheus.
shoestring-metrics.service runs it; settings come from its environment."""

import os

from django.core.management.base import BaseCommand, CommandError

from core.exporter import registry_for, serve
from core.pause import DEFAULT_FLAG, setting

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Command(BaseCommand):
    help = "Serve the app's Prometheus metrics on a loopback address (never the internet)."

    def add_arguments(self, parser):
        parser.add_argument("--address", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9808)
        parser.add_argument(
            "--metrics-dir",
            default=os.environ.get("SHOESTRING_METRICS_DIR", "/run/shoestring-metrics"),
            help="where each pool's multiprocess directory is (<dir>/<pool>/*.db)",
        )
        parser.add_argument(
            "--tls-address",
            default=os.environ.get("SHOESTRING_METRICS_TLS_ADDRESS", ""),
            help="host:port whose TLS certificate's expiry to export (empty: none)",
        )
        parser.add_argument(
            "--tls-server-name", default=os.environ.get("SHOESTRING_METRICS_TLS_SERVER_NAME", "")
        )

    def handle(self, *args, **options):
        if options["address"] not in LOOPBACK:
            raise CommandError(
                f"--address must be a loopback address ({', '.join(LOOPBACK)}), "
                f"got {options['address']!r}: metrics are reached through an ssh tunnel"
            )
        registry = registry_for(
            options["metrics_dir"],
            setting("SHOESTRING_GUARD_PAUSE_FLAG", DEFAULT_FLAG),
            options["tls_address"],
            options["tls_server_name"],
        )
        serve(registry, options["address"], options["port"])
