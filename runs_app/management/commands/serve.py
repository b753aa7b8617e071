"""manage.py serve: the embedded product in one process.

Starts the zygotes, the embedded workers (with their heartbeat, reaper and dispatcher),
then the web server (no autoreloader: it would start the workers twice), and once the
server listens, enqueues the demo's first run if the demo has none yet and imports, in the
background, what the first page views would otherwise wait for (scipy.stats).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.core.servers.basehttp import (
    WSGIRequestHandler,
    WSGIServer,
    get_internal_wsgi_application,
)
from django.db import connection


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        if settings.DEBUG:
            super().log_message(format, *args)


class ThreadingWSGIServer(WSGIServer):
    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, Any]:
        # The handler writes the headers and the body separately; with Nagle's algorithm
        # on, the body then waits for the client's delayed ACK (~40 ms on every request).
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


def _warm_imports() -> None:
    """Import what the first pages would otherwise import on a user's clock: scipy's t
    distribution (the sweep comparison's CIs and tests; 1-2 s here), imported late by
    runs_app.sweeps.stats so that commands and workers do not pay for it."""
    import scipy.stats  # noqa: F401


class Command(BaseCommand):
    help = "Serve the web app with in-process workers (the embedded default)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-workers", action="store_true", help="web server only")
        parser.add_argument("--no-demo-run", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        import socketserver

        started = time.monotonic()
        workers = None
        if not options["no_workers"]:
            from runs_app.dispatch import EmbeddedWorkers

            workers = EmbeddedWorkers()
            workers.start()
        server_class = type("Server", (socketserver.ThreadingMixIn, ThreadingWSGIServer), {})
        httpd = server_class((options["host"], options["port"]), QuietHandler, ipv6=False)
        httpd.set_app(get_internal_wsgi_application())
        url = f"http://{options['host']}:{options['port']}/"
        self.stdout.write(
            f"Stepworks is up at {url} (ready in {time.monotonic() - started:.1f} s)\n"
            "Log in as demo / demo. Ctrl-C stops it."
        )
        if workers is not None and not options["no_demo_run"]:
            threading.Thread(target=self._first_demo_run, daemon=True).start()
        threading.Thread(target=_warm_imports, daemon=True).start()
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            self.stdout.write("stopping")
        finally:
            httpd.server_close()
            if workers is not None:
                workers.stop()

    def _first_demo_run(self) -> None:
        """The demo's first run, once, so the explorer has something to show."""
        from pipelines_app.selectors import pipeline_version_by_ref
        from runs_app import scheduler
        from runs_app.models import PipelineRun
        from workspaces.models import Workspace

        try:
            workspace = Workspace.objects.filter(slug="demo").first()
            if workspace is None or PipelineRun.objects.filter(workspace=workspace).exists():
                return
            version = pipeline_version_by_ref(workspace, "classify")
            run = scheduler.run_create(version)
            self.stdout.write(f"started the demo's first run: {run.pk}")
        except Exception as error:  # the server stays up; say why the demo did not start
            self.stderr.write(f"could not start the demo run: {error}")
        finally:
            connection.close()
