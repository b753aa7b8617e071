"""The one domain error, and how it (and DRF's errors) become HTTP responses.

Services raise DomainError(code, message, fields); the API answers
{"error": {"code", "message", "fields": {field: [reason, ...]}}} with its status, and
pages show the message next to the field.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler


class DomainError(Exception):
    """A request that cannot be done as asked; `fields` maps a field path to its reasons."""

    status_code = 400

    def __init__(
        self,
        code: str,
        message: str,
        fields: dict[str, list[str]] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields or {}
        if status_code is not None:
            self.status_code = status_code

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "fields": self.fields}

    def __str__(self) -> str:
        if not self.fields:
            return self.message
        details = "; ".join(
            f"{path}: {reason}" for path, reasons in self.fields.items() for reason in reasons
        )
        return f"{self.message} ({details})"


def text_problem(value: str) -> str | None:
    """Why no database column can store this text (NUL, a lone surrogate), or None."""
    if "\x00" in value:
        return "text may not contain NUL characters"
    if any(0xD800 <= ord(char) <= 0xDFFF for char in value):
        return "text may not contain unpaired surrogates"
    return None


class Problems:
    """Collects every problem with its field path, so one request reports them all."""

    def __init__(self, fields: dict[str, list[str]] | None = None) -> None:
        self.fields: dict[str, list[str]] = fields or {}

    def add(self, path: str, reason: str) -> None:
        self.fields.setdefault(path, []).append(reason)

    def merge(self, fields: dict[str, list[str]]) -> None:
        for path, reasons in fields.items():
            for reason in reasons:
                self.add(path, reason)

    def error(self, code: str, what: str) -> DomainError:
        count = sum(len(reasons) for reasons in self.fields.values())
        noun = "problem" if count == 1 else "problems"
        return DomainError(code, f"The {what} has {count} {noun}.", self.fields)

    def raise_if_any(self, code: str, what: str) -> None:
        if self.fields:
            raise self.error(code, what)


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail -> {"a.b": ["reason", ...]}."""
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = str(key) if key != "non_field_errors" else "non_field_errors"
            out.update(_flatten(value, f"{prefix}.{name}" if prefix else name))
        return out
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return {prefix or "non_field_errors": [str(item) for item in detail]}
        out = {}
        for index, item in enumerate(detail):
            out.update(_flatten(item, f"{prefix}.{index}" if prefix else str(index)))
        return out
    return {prefix or "non_field_errors": [str(detail)]}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every API error in one shape: {"error": {"code", "message", "fields"}}."""
    if isinstance(exc, DomainError):
        return Response({"error": exc.as_dict()}, status=exc.status_code)
    # Django's own 404 and 403 become DRF's, keeping their message (as DRF's handler does).
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        body = {"code": "invalid", "message": "The request is not valid.", "fields": fields}
    elif isinstance(exc, exceptions.APIException):
        detail = exc.detail
        message = str(detail) if not isinstance(detail, dict | list) else "Request failed."
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
        body = {"code": str(code), "message": message, "fields": {}}
    else:  # pragma: no cover - DRF only handles APIException and Http404/PermissionDenied
        body = {"code": "error", "message": "Request failed.", "fields": {}}
    response.data = {"error": body}
    return response


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 404 for a path no route matches: the site's page, or under /api/ the API's
    error shape (a client of the API never gets an HTML page)."""
    if request.path.startswith("/api/"):
        body = {"code": "not_found", "message": "No such API route.", "fields": {}}
        return JsonResponse({"error": body}, status=404)
    return defaults.page_not_found(request, exception)
