"""The conventions every endpoint of /api/v1/ follows, and the workspace and member endpoints.

One API class per operation, with its input and output serializers nested in it; writes go
through a services module; every object is fetched through a workspace-scoped access helper
(another workspace's object is a 404, a role too low to write a 403); every error is
{"error": {"code", "message", "fields"}} (workspaces.errors.api_exception_handler); lists
are paginated with limit/offset and filtered with django-filter, each with its joins stated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.db.models import Max, QuerySet
from django.http import Http404
from django.urls import reverse
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import exceptions, generics, serializers, status
from rest_framework.pagination import BasePagination, LimitOffsetPagination
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.schemas.inspectors import DefaultSchema
from rest_framework.views import APIView

from workspaces import invites as invite_services
from workspaces import selectors, services
from workspaces.audit import audit_list
from workspaces.errors import DomainError, text_problem
from workspaces.models import AuditEntry, AuditVerb, Invite, Membership, Role, Workspace
from workspaces.serializers import ErrorSerializer, WorkspaceSerializer

# --- conventions ---------------------------------------------------------------------------

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# Dates a filter may name: past these nothing was created, and some databases raise.
MIN_YEAR, MAX_YEAR = 1, 9999
# Largest id or offset a query may name: past it nothing exists, and some databases raise.
MAX_INT = 2**62


class ApiSchema(AutoSchema):
    """drf-spectacular's AutoSchema with component names taken from the API class
    (RunDetailApi.OutputSerializer -> RunDetailOutput) and the one error format documented
    for every error status an operation can answer."""

    def get_serializer_name(self, serializer: Any, direction: str) -> str:
        parts = type(serializer).__qualname__.split(".")
        return "".join(part.removesuffix("Serializer").removesuffix("Api") for part in parts)

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        codes = ["400", "401", "403", "404"]
        if self.method in WRITE_METHODS:
            codes += ["409", "413", "415"]
        for code in codes:
            if code not in responses:
                responses[code] = self._get_response_for_code(  # type: ignore[no-untyped-call]
                    ErrorSerializer, code, direction=direction
                )
        return responses


class _ApiSchemaPerView(DefaultSchema):
    """A fresh ApiSchema per view instance (a shared one would race between requests)."""

    def __get__(self, instance: Any, owner: Any) -> Any:
        if instance is None:
            return ApiSchema  # drf-spectacular reads the class to extend it per operation
        if instance in self.instance_schemas:  # set by drf-spectacular for an operation
            return self.instance_schemas[instance]
        inspector = ApiSchema()
        inspector.view = instance
        return inspector


class ApiPagination(LimitOffsetPagination):
    max_limit = 500


def upload_limit() -> int:
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


class ApiMixin:
    """What every API class shares: the schema inspector, pagination, and uploads over the
    limit refused by their Content-Length, before a byte of the body is read."""

    schema = _ApiSchemaPerView()
    pagination_class: type[BasePagination] | None = ApiPagination
    parser_classes: Sequence[type[BaseParser]] = [JSONParser]  # uploads say otherwise

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if request.method in WRITE_METHODS:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            limit = self.body_limit()
            if length > limit:
                raise DomainError(
                    "too_large",
                    f"The request body is {length} bytes; the limit is {limit}.",
                    {"body": [f"at most {limit} bytes"]},
                    status_code=413,
                )
        super().initial(request, *args, **kwargs)  # type: ignore[misc]

    def body_limit(self) -> int:
        """The largest request body this endpoint takes (STEPWORKS_MAX_UPLOAD_BYTES)."""
        return upload_limit()

    def handle_exception(self, exc: Exception) -> Response:
        # The access helpers raise Django's 404/403; as DRF's they keep their message
        # ("No such run.", "This needs the editor role ...") and their code.
        if isinstance(exc, Http404):
            exc = exceptions.NotFound(str(exc) or None)
        elif isinstance(exc, PermissionDenied):
            exc = exceptions.PermissionDenied(str(exc) or None)
        elif isinstance(exc, RequestDataTooBig):
            exc = DomainError("too_large", str(exc), {"body": [str(exc)]}, status_code=413)
        elif isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
            # Django's caps on a form (DATA_UPLOAD_MAX_NUMBER_FIELDS / _FILES).
            exc = DomainError("invalid", str(exc), {"body": [str(exc)]})
        response: Response = super().handle_exception(exc)  # type: ignore[misc]
        return response


def check_json_text(value: Any, path: str = "") -> dict[str, list[str]]:
    """Problems of JSON data no database column can store (NUL, lone surrogates), by path."""
    problems: dict[str, list[str]] = {}
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, here = stack.pop()
        if isinstance(item, str):
            reason = text_problem(item)
            if reason:
                problems.setdefault(here or "value", []).append(reason)
        elif isinstance(item, dict):
            for key, child in item.items():
                reason = text_problem(str(key))
                if reason:
                    problems.setdefault(here or "value", []).append(f"key: {reason}")
                stack.append((child, f"{here}.{key}" if here else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{here}.{i}" if here else str(i)) for i, child in enumerate(item))
    return problems


class JsonDataField(serializers.JSONField):
    """Any JSON value a database column can store."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        problems = check_json_text(value)
        if problems:
            raise serializers.ValidationError(problems)
        return value


class JsonObjectField(JsonDataField):
    """A JSON object (a mapping)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            # From a multipart form a mapping arrives as JSON text.
            try:
                data = json.loads(data, parse_constant=_no_constant)
            except ValueError:
                raise serializers.ValidationError("expected a JSON object") from None
        if not isinstance(data, dict):
            raise serializers.ValidationError("expected a JSON object")
        return super().to_internal_value(data)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


extend_schema_field({"type": "object", "additionalProperties": True})(JsonObjectField)


def workspace_of(request: Request, slug: str, role: str = Role.VIEWER) -> Workspace:
    """The workspace `slug` for the caller with at least `role` (404 / 403 otherwise)."""
    return selectors.get_workspace_for_user(request.user, slug, role)


def newest_id(versions: QuerySet[Any]) -> int:
    """The highest row id among `versions` (0 when there is none)."""
    return versions.aggregate(newest=Max("pk"))["newest"] or 0


def created(version: Any, newest_before: int) -> int:
    """201 when a push made a new version, 200 when it returned an existing one (pushing
    unchanged code or an unchanged spec creates nothing)."""
    return status.HTTP_201_CREATED if version.pk > newest_before else status.HTTP_200_OK


class _UtcDateTimeField(IsoDateTimeField):  # type: ignore[misc]
    """An ISO 8601 date-time, in UTC before it reaches a query (a database refuses some
    offsets and years a parser accepts)."""

    def to_python(self, value: Any) -> Any:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            utc = parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError("out of range") from None
        if not MIN_YEAR <= utc.year <= MAX_YEAR:
            raise forms.ValidationError(f"a year from {MIN_YEAR} to {MAX_YEAR}")
        return utc


class DateTimeFilter(filters.IsoDateTimeFilter):  # type: ignore[misc]
    field_class = _UtcDateTimeField


def created_between() -> tuple[DateTimeFilter, DateTimeFilter]:
    """`created_after` (inclusive) and `created_before` (exclusive) filters."""
    return (
        DateTimeFilter(field_name="created_at", lookup_expr="gte"),
        DateTimeFilter(field_name="created_at", lookup_expr="lt"),
    )


class NameFilter(filters.FilterSet):  # type: ignore[misc]
    """`?name=` part of the name, case-insensitive."""

    name = filters.CharFilter(field_name="name", lookup_expr="icontains")


# --- workspaces and members ----------------------------------------------------------------


class WorkspaceListApi(ApiMixin, generics.ListAPIView[Workspace]):
    """The workspaces the caller is a member of, with the caller's role."""

    queryset = Workspace.objects.none()  # for the schema; get_queryset scopes by user
    serializer_class = WorkspaceSerializer

    class FilterSet(filters.FilterSet):  # type: ignore[misc]
        slug = filters.CharFilter()
        name = filters.CharFilter(lookup_expr="icontains")
        role = filters.ChoiceFilter(field_name="memberships__role", choices=Role.choices)

        class Meta:
            model = Workspace
            fields = ["slug", "name", "role"]

    filterset_class = FilterSet

    def get_queryset(self) -> QuerySet[Workspace]:
        return selectors.workspaces_for_user(self.request.user).order_by("slug")


class WorkspaceCreateApi(ApiMixin, APIView):
    """Create a workspace; the caller becomes its owner."""

    class InputSerializer(serializers.Serializer[Any]):
        slug = serializers.RegexField(services.SLUG_RE, max_length=64, help_text=services.SLUG_HELP)
        name = serializers.CharField(max_length=200)

        def validate_slug(self, value: str) -> str:
            if value in services.RESERVED_SLUGS:  # /workspaces/create/ is this endpoint
                raise serializers.ValidationError(f"{value!r} is reserved")
            return value

    @extend_schema(request=InputSerializer, responses={201: WorkspaceSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        workspace = services.workspace_create(
            data.validated_data["slug"], data.validated_data["name"], request.user
        )  # 403 when only staff may (STEPWORKS_WORKSPACE_CREATION=staff)
        workspace.user_role = Role.OWNER  # type: ignore[attr-defined]
        return Response(WorkspaceSerializer(workspace).data, status=status.HTTP_201_CREATED)


class WorkspaceDetailApi(ApiMixin, APIView):
    """One workspace, with the caller's role."""

    @extend_schema(responses={200: WorkspaceSerializer})
    def get(self, request: Request, workspace: str) -> Response:
        return Response(WorkspaceSerializer(workspace_of(request, workspace)).data)


class MemberOutputSerializer(serializers.Serializer[Any]):
    username = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.choices, allow_null=True)


class MemberListApi(ApiMixin, generics.ListAPIView[Membership]):
    """The members of a workspace and their roles."""

    queryset = Membership.objects.none()

    class OutputSerializer(serializers.ModelSerializer[Membership]):
        username = serializers.CharField(source="user.username")

        class Meta:
            model = Membership
            fields = ["username", "role", "created_at"]

    class FilterSet(filters.FilterSet):  # type: ignore[misc]
        role = filters.ChoiceFilter(choices=Role.choices)
        username = filters.CharFilter(field_name="user__username")

        class Meta:
            model = Membership
            fields = ["role", "username"]

    serializer_class = OutputSerializer
    filterset_class = FilterSet

    def get_queryset(self) -> QuerySet[Membership]:
        return selectors.membership_list(workspace_of(self.request, self.kwargs["workspace"]))


class MemberSetApi(ApiMixin, APIView):
    """Give a user (by username or email address) a role in the workspace, or remove them
    with `role: null` (owners only). The last owner can be neither demoted nor removed (409)."""

    class InputSerializer(serializers.Serializer[Any]):
        username = serializers.CharField(max_length=254, help_text="A username or an email.")
        role = serializers.ChoiceField(choices=Role.choices, allow_null=True)

    @extend_schema(request=InputSerializer, responses={200: MemberOutputSerializer})
    def post(self, request: Request, workspace: str) -> Response:
        space = workspace_of(request, workspace, Role.OWNER)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_named(data.validated_data["username"])
        membership = services.membership_set(
            space, user, data.validated_data["role"], actor=request.user
        )
        role = membership.role if membership else None
        return Response(
            MemberOutputSerializer({"username": user.get_username(), "role": role}).data
        )


class WorkspaceRenameApi(ApiMixin, APIView):
    """Give the workspace a new name (owners); its slug stays."""

    class InputSerializer(serializers.Serializer[Any]):
        name = serializers.CharField(max_length=200)

    @extend_schema(request=InputSerializer, responses={200: WorkspaceSerializer})
    def post(self, request: Request, workspace: str) -> Response:
        space = workspace_of(request, workspace, Role.OWNER)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.workspace_rename(space, data.validated_data["name"], actor=request.user)
        return Response(WorkspaceSerializer(space).data)


class AuditListApi(ApiMixin, generics.ListAPIView[AuditEntry]):
    """The workspace's audit trail, newest first (owners): who did what, when. Filters:
    `actor` (a username), `verb` (member.added, run.started, ...), `created_after`,
    `created_before`."""

    queryset = AuditEntry.objects.none()

    class OutputSerializer(serializers.ModelSerializer[AuditEntry]):
        actor = serializers.CharField(source="actor_name")

        class Meta:
            model = AuditEntry
            fields = ["id", "at", "actor", "verb", "target", "data"]

    class FilterSet(filters.FilterSet):  # type: ignore[misc]
        actor = filters.CharFilter(field_name="actor_name")
        verb = filters.ChoiceFilter(choices=AuditVerb.choices)
        created_after = DateTimeFilter(field_name="at", lookup_expr="gte")
        created_before = DateTimeFilter(field_name="at", lookup_expr="lt")

        class Meta:
            model = AuditEntry
            fields = ["actor", "verb"]

    serializer_class = OutputSerializer
    filterset_class = FilterSet

    def get_queryset(self) -> QuerySet[AuditEntry]:
        space = workspace_of(self.request, self.kwargs["workspace"], Role.OWNER)
        return audit_list(space)


# --- invites -------------------------------------------------------------------------------


class InviteOutputSerializer(serializers.ModelSerializer[Invite]):
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)

    class Meta:
        model = Invite
        fields = [
            "id",
            "role",
            "email",
            "uses",
            "max_uses",
            "expires_at",
            "created_by",
            "created_at",
        ]


class InviteListApi(ApiMixin, generics.ListAPIView[Invite]):
    """The workspace's open invites (not expired, used up or revoked), newest first (owners)."""

    queryset = Invite.objects.none()
    serializer_class = InviteOutputSerializer

    def get_queryset(self) -> QuerySet[Invite]:
        space = workspace_of(self.request, self.kwargs["workspace"], Role.OWNER)
        return invite_services.open_invites(space)


class InviteCreateApi(ApiMixin, APIView):
    """Make an invite link for a role (owners): `url` is in this answer and nowhere else
    (only its hash is stored). With EMAIL_URL set and an `email`, it is mailed too."""

    class InputSerializer(serializers.Serializer[Any]):
        role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)
        days = serializers.IntegerField(
            min_value=1, max_value=invite_services.MAX_DAYS, required=False
        )
        max_uses = serializers.IntegerField(
            min_value=1, max_value=invite_services.MAX_USES, required=False
        )
        email = serializers.EmailField(required=False, allow_blank=True, default="")

    class OutputSerializer(InviteOutputSerializer):
        url = serializers.CharField()
        mailed = serializers.BooleanField()

        class Meta(InviteOutputSerializer.Meta):
            fields = [*InviteOutputSerializer.Meta.fields, "url", "mailed"]

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request: Request, workspace: str) -> Response:
        space = workspace_of(request, workspace, Role.OWNER)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        invite, token = invite_services.invite_create(
            space, actor=request.user, **data.validated_data
        )
        link = request.build_absolute_uri(reverse("workspaces:invite", args=[token]))
        invite.url = link  # type: ignore[attr-defined]
        invite.mailed = invite_services.invite_mail(invite, link)  # type: ignore[attr-defined]
        return Response(self.OutputSerializer(invite).data, status=status.HTTP_201_CREATED)


class InviteRevokeApi(ApiMixin, APIView):
    """Revoke an open invite (owners): its link stops working."""

    class OutputSerializer(serializers.Serializer[Any]):
        revoked = serializers.BooleanField(help_text="false: it was revoked already")

    @extend_schema(request=None, responses={200: OutputSerializer})
    def post(self, request: Request, workspace: str, invite_id: int) -> Response:
        space = workspace_of(request, workspace, Role.OWNER)
        invite = selectors.one_or_404(
            Invite.objects.filter(workspace=space, pk=invite_id), "invite"
        )
        revoked = invite_services.invite_revoke(invite, actor=request.user)
        return Response(self.OutputSerializer({"revoked": revoked}).data)
