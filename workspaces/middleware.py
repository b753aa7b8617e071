"""A DomainError that reaches the top of a page view is a page with its status and message
(400, 409, 410 ...), never a 500. The API has its own handler (workspaces.errors)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from workspaces.errors import DomainError


class DomainErrorPages:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DomainError) or request.path.startswith("/api/"):
            return None
        response = TemplateResponse(
            request, "error.html", {"error": exception}, status=exception.status_code
        )
        return response.render()
