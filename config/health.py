"""/healthz: the process answers. /readyz: it can serve, its database and broker answer.

Both are plain Django views (no session, no login) for load balancers and supervisors:
200 with {"status": "ok", ...}, or 503 with what failed.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from workspaces.conf import engine

CHECK_TIMEOUT_S = 2.0


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_broker() -> str:
    url = settings.BROKER_URL
    if not url:
        return "embedded"  # the in-process broker: up whenever this process is
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(
            url, socket_timeout=CHECK_TIMEOUT_S, socket_connect_timeout=CHECK_TIMEOUT_S
        )
        try:
            client.ping()
        finally:
            client.close()
        return "ok"
    import pika

    separator = "&" if urlsplit(url).query else "?"
    timeouts = {"socket_timeout": CHECK_TIMEOUT_S, "connection_attempts": 1}
    connection_ = pika.BlockingConnection(pika.URLParameters(url + separator + urlencode(timeouts)))
    connection_.close()
    return "ok"


def _step_sandbox() -> dict[str, Any]:
    """Whether the live workers isolate their steps: a warning, never "not ready" (an
    operator who set STEPWORKS_STEP_SANDBOX=off chose to serve that way)."""
    from runs_app.selectors import live_workers_unisolated

    try:
        unisolated = live_workers_unisolated()
    except Exception as error:  # the database check above reports the cause
        return {"status": "unknown", "error": f"{type(error).__name__}: {error}"}
    if unisolated:
        return {
            "status": "off",
            "warning": "steps are not isolated (STEPWORKS_STEP_SANDBOX=off) on these workers",
            "workers": unisolated,
        }
    return {"status": engine().step_sandbox}


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """The database and the broker answer."""
    checks: dict[str, Any] = {}
    ready = True
    for name, check in (("database", _check_database), ("broker", _check_broker)):
        started = time.monotonic()
        try:
            checks[name] = {"status": check()}
        except Exception as error:  # any failure is "not ready", with its reason
            ready = False
            checks[name] = {"status": "error", "error": f"{type(error).__name__}: {error}"}
        checks[name]["ms"] = round((time.monotonic() - started) * 1000, 1)
    checks["step_sandbox"] = _step_sandbox()
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
