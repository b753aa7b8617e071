"""The operator's pages: `/workers/` (staff: each worker, what it runs, the queues' depths)
and `/metrics` (Prometheus' exposition, behind a bearer token).

`/metrics` is off (404) unless STEPWORKS_METRICS_TOKEN is set; with it, a request without
`Authorization: Bearer <that token>` is a 401. The token is compared in constant time.
"""

from __future__ import annotations

import hmac

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from runs_app import fleet, prometheus
from workspaces.conf import operations


@login_required
@require_GET
def workers_page(request: HttpRequest) -> TemplateResponse:
    """Every worker (alive or not), the steps each runs now, and the queues' depths."""
    if not request.user.is_staff:
        raise PermissionDenied("The workers page is for staff.")
    context = {"workers": fleet.workers_overview(), "queues": fleet.queue_depths()}
    return TemplateResponse(request, "runs_app/workers.html", context)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus' text exposition of the engine's state (runs_app/prometheus.py)."""
    token = operations().metrics_token
    if not token:
        raise Http404("/metrics is off: set STEPWORKS_METRICS_TOKEN to turn it on.")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        refused = HttpResponse("A bearer token is needed.\n", status=401, content_type="text/plain")
        refused["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refused
    body, content_type = prometheus.metrics_exposition(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)
