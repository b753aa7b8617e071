"""Design-time REST API, and the conventions every endpoint of /api/v1/ follows.

Conventions (runs_app/api.py uses them too): one API class per operation, with its input and
output serializers nested in it; writes go through pipelines_app.services; every object is
fetched through the workspace-scoped access helpers (another workspace's object is a 404, a
role too low to write a 403); every error is {"error": {"code", "message", "fields"}}
(pipelines_app.errors.api_exception_handler); lists are paginated with limit/offset and
filtered with django-filter, each with its joins stated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.db.models import Max, QuerySet
from django.http import Http404
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import exceptions, generics, serializers, status
from rest_framework.pagination import BasePagination, LimitOffsetPagination
from rest_framework.parsers import BaseParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.schemas.inspectors import DefaultSchema
from rest_framework.views import APIView

from pipelines_app import selectors, services
from pipelines_app.errors import DomainError
from pipelines_app.interfaces import ENTRYPOINT_RE
from pipelines_app.models import (
    Dataset,
    DatasetVersion,
    Membership,
    Module,
    ModuleVersion,
    Pipeline,
    PipelineVersion,
    Role,
    VersionOrigin,
    Workspace,
)
from pipelines_app.serializers import (
    DatasetVersionSerializer,
    ErrorSerializer,
    ModuleVersionSerializer,
    PipelineVersionSerializer,
    WorkspaceSerializer,
    username_of,
)
from pipelines_app.specs import SPEC_JSON_SCHEMA, parse_spec
from stepworks.outputs import guess_media_type

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
                responses[code] = self._get_response_for_code(
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
            limit = upload_limit()
            if length > limit:
                raise DomainError(
                    "too_large",
                    f"The request body is {length} bytes; the limit is {limit}.",
                    {"body": [f"at most {limit} bytes"]},
                    status_code=413,
                )
        super().initial(request, *args, **kwargs)  # type: ignore[misc]

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
        return super().handle_exception(exc)  # type: ignore[misc]


def _bad_text(value: str) -> str | None:
    if "\x00" in value:
        return "text may not contain NUL characters"
    if any(0xD800 <= ord(char) <= 0xDFFF for char in value):
        return "text may not contain unpaired surrogates"
    return None


def check_json_text(value: Any, path: str = "") -> dict[str, list[str]]:
    """Problems of JSON data no database column can store (NUL, lone surrogates), by path."""
    problems: dict[str, list[str]] = {}
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, here = stack.pop()
        if isinstance(item, str):
            reason = _bad_text(item)
            if reason:
                problems.setdefault(here or "value", []).append(reason)
        elif isinstance(item, dict):
            for key, child in item.items():
                reason = _bad_text(str(key))
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


class _UtcDateTimeField(IsoDateTimeField):
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


class DateTimeFilter(filters.IsoDateTimeFilter):
    field_class = _UtcDateTimeField


def created_between() -> tuple[DateTimeFilter, DateTimeFilter]:
    """`created_after` (inclusive) and `created_before` (exclusive) filters."""
    return (
        DateTimeFilter(field_name="created_at", lookup_expr="gte"),
        DateTimeFilter(field_name="created_at", lookup_expr="lt"),
    )


class NameFilter(filters.FilterSet):
    """`?name=` part of the name, case-insensitive."""

    name = filters.CharFilter(field_name="name", lookup_expr="icontains")


# --- meta ----------------------------------------------------------------------------------


class SpecSchemaApi(ApiMixin, APIView):
    """The JSON Schema of a pipeline spec (what `spec` of a pipeline version accepts)."""

    permission_classes = [AllowAny]

    @extend_schema(responses={200: OpenApiResponse(description="A JSON Schema document.")})
    def get(self, request: Request) -> Response:
        return Response(SPEC_JSON_SCHEMA)


# --- workspaces and members ----------------------------------------------------------------


class WorkspaceListApi(ApiMixin, generics.ListAPIView):
    """The workspaces the caller is a member of, with the caller's role."""

    queryset = Workspace.objects.none()  # for the schema; get_queryset scopes by user
    serializer_class = WorkspaceSerializer

    class FilterSet(filters.FilterSet):
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

    class InputSerializer(serializers.Serializer):
        slug = serializers.RegexField(services.SLUG_RE, max_length=64, help_text=services.SLUG_HELP)
        name = serializers.CharField(max_length=200)

        def validate_slug(self, value: str) -> str:
            if value == "create":  # /workspaces/create/ is this endpoint
                raise serializers.ValidationError("'create' is reserved")
            return value

    @extend_schema(request=InputSerializer, responses={201: WorkspaceSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        workspace = services.workspace_create(
            data.validated_data["slug"], data.validated_data["name"], request.user
        )
        workspace.user_role = Role.OWNER  # type: ignore[attr-defined]
        return Response(WorkspaceSerializer(workspace).data, status=status.HTTP_201_CREATED)


class WorkspaceDetailApi(ApiMixin, APIView):
    """One workspace, with the caller's role."""

    @extend_schema(responses={200: WorkspaceSerializer})
    def get(self, request: Request, workspace: str) -> Response:
        return Response(WorkspaceSerializer(workspace_of(request, workspace)).data)


class MemberOutputSerializer(serializers.Serializer):
    username = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.choices, allow_null=True)


class MemberListApi(ApiMixin, generics.ListAPIView):
    """The members of a workspace and their roles."""

    queryset = Membership.objects.none()

    class OutputSerializer(serializers.ModelSerializer):
        username = serializers.CharField(source="user.username")

        class Meta:
            model = Membership
            fields = ["username", "role", "created_at"]

    class FilterSet(filters.FilterSet):
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
    """Give a user a role in the workspace, or remove them with `role: null` (owners only)."""

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        role = serializers.ChoiceField(choices=Role.choices, allow_null=True)

    @extend_schema(request=InputSerializer, responses={200: MemberOutputSerializer})
    def post(self, request: Request, workspace: str) -> Response:
        space = workspace_of(request, workspace, Role.OWNER)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        username = data.validated_data["username"]
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise DomainError(
                "invalid", "No such user.", {"username": [f"no user named {username!r}"]}
            )
        membership = services.membership_set(space, user, data.validated_data["role"])
        role = membership.role if membership else None
        return Response(MemberOutputSerializer({"username": username, "role": role}).data)


# --- modules -------------------------------------------------------------------------------


class ModuleListApi(ApiMixin, generics.ListAPIView):
    """The workspace's modules, each with its number of versions and latest number."""

    queryset = Module.objects.none()
    filterset_class = NameFilter

    class OutputSerializer(serializers.ModelSerializer):
        version_count = serializers.IntegerField()
        latest_number = serializers.IntegerField(allow_null=True)

        class Meta:
            model = Module
            fields = ["name", "description", "version_count", "latest_number", "created_at"]

    serializer_class = OutputSerializer

    def get_queryset(self) -> QuerySet[Module]:
        return selectors.module_list(workspace_of(self.request, self.kwargs["workspace"]))


class ModuleDetailApi(ApiMixin, APIView):
    """One module, with its latest version's number."""

    @extend_schema(responses={200: ModuleListApi.OutputSerializer})
    def get(self, request: Request, workspace: str, name: str) -> Response:
        module = selectors.get_module_for_user(request.user, workspace, name)
        row = selectors.module_list(module.workspace).get(pk=module.pk)
        return Response(ModuleListApi.OutputSerializer(row).data)


class ModuleVersionListApi(ApiMixin, generics.ListAPIView):
    """A module's versions, newest first (files and interface left out: see the detail)."""

    queryset = ModuleVersion.objects.none()

    class OutputSerializer(serializers.ModelSerializer):
        parent = serializers.IntegerField(  # type: ignore[assignment]
            source="parent_number", allow_null=True
        )
        created_by = serializers.SerializerMethodField()

        class Meta:
            model = ModuleVersion
            fields = [
                "number",
                "parent",
                "message",
                "entrypoint",
                "code_digest",
                "interface_source",
                "created_by",
                "created_at",
            ]

        @extend_schema_field({"type": "string", "nullable": True})
        def get_created_by(self, obj: ModuleVersion) -> str | None:
            return username_of(obj.created_by)

    class FilterSet(filters.FilterSet):
        code_digest = filters.CharFilter()
        created_after, created_before = created_between()

        class Meta:
            model = ModuleVersion
            fields = ["code_digest"]

    serializer_class = OutputSerializer
    filterset_class = FilterSet

    def get_queryset(self) -> QuerySet[ModuleVersion]:
        kwargs = self.kwargs
        module = selectors.get_module_for_user(
            self.request.user, kwargs["workspace"], kwargs["name"]
        )
        return selectors.module_version_list(module)


class ModuleVersionDetailApi(ApiMixin, APIView):
    """One module version with its files, interface, imports and warnings."""

    @extend_schema(responses={200: ModuleVersionSerializer})
    def get(self, request: Request, workspace: str, name: str, number: int) -> Response:
        version = selectors.get_module_version_for_user(request.user, workspace, name, number)
        return Response(ModuleVersionSerializer(version).data)


class ModuleVersionCreateApi(ApiMixin, APIView):
    """Push a version of a module (created on its first push) from a JSON map of files or
    from uploaded files; pushing unchanged code returns the latest version with 200."""

    parser_classes = [JSONParser, MultiPartParser]

    class InputSerializer(serializers.Serializer):
        files = serializers.DictField(
            child=serializers.CharField(allow_blank=True, trim_whitespace=False),
            allow_empty=False,
            help_text='{"relative/path.py": "file text", ...}',
        )
        entrypoint = serializers.RegexField(
            ENTRYPOINT_RE, max_length=300, help_text="file.py:function"
        )
        message = serializers.CharField(allow_blank=True, required=False, default="")
        interface = JsonObjectField(
            required=False,
            allow_null=True,
            default=None,
            help_text="An explicit interface, when the code says too little.",
        )

    class UploadSerializer(serializers.Serializer):
        files = serializers.ListField(
            child=serializers.FileField(allow_empty_file=True), allow_empty=False
        )
        paths = serializers.ListField(
            child=serializers.CharField(max_length=500),
            required=False,
            help_text="Each file's relative path, in the order of `files` (the uploaded file "
            "name otherwise).",
        )
        entrypoint = serializers.RegexField(
            ENTRYPOINT_RE, max_length=300, help_text="file.py:function"
        )
        message = serializers.CharField(allow_blank=True, required=False, default="")
        interface = JsonObjectField(required=False, allow_null=True, default=None)

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            paths = attrs.get("paths")
            if paths is not None and len(paths) != len(attrs["files"]):
                raise serializers.ValidationError({"paths": ["one path for each file"]})
            return attrs

    @extend_schema(
        request={"application/json": InputSerializer, "multipart/form-data": UploadSerializer},
        responses={201: ModuleVersionSerializer, 200: ModuleVersionSerializer},
    )
    def post(self, request: Request, workspace: str, name: str) -> Response:
        space = workspace_of(request, workspace, Role.EDITOR)
        data: serializers.Serializer[Any]
        if request.content_type.startswith("multipart/"):
            data = self.UploadSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            files = _uploaded_sources(data.validated_data)
        else:
            data = self.InputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            files = data.validated_data["files"]
        previous = newest_id(
            ModuleVersion.objects.filter(module__workspace=space, module__name=name)
        )
        version = services.module_version_create(
            space,
            name,
            files,
            data.validated_data["entrypoint"],
            data.validated_data["message"],
            interface=data.validated_data["interface"],
            user=request.user,
        )
        return Response(ModuleVersionSerializer(version).data, status=created(version, previous))


def _uploaded_sources(validated: dict[str, Any]) -> dict[str, str]:
    """{relative path: text} of uploaded files (bytes that are not UTF-8 are kept, so the
    inspection names the file)."""
    limit = settings.STEPWORKS["MAX_SOURCE_BYTES"]
    uploads = validated["files"]
    size = sum(upload.size for upload in uploads)
    if size > limit:
        raise DomainError(
            "invalid_module",
            "The module's files are too large.",
            {"files": [f"{size} bytes of source; the limit is {limit}"]},
        )
    paths = validated.get("paths") or [upload.name for upload in uploads]
    files: dict[str, str] = {}
    for path, upload in zip(paths, uploads, strict=True):
        if path in files:
            raise DomainError(
                "invalid_module", "Two files have one path.", {"paths": [f"{path!r} twice"]}
            )
        files[path] = upload.read().decode("utf-8", "surrogateescape")
    return files


# --- pipelines -----------------------------------------------------------------------------


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "description": "YAML or JSON text"},
            {"type": "object", "additionalProperties": True},
        ]
    }
)
class SpecField(JsonDataField):
    """A pipeline spec: YAML/JSON text or an object (see /api/v1/spec-schema.json)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str | dict):
            raise serializers.ValidationError("a YAML or JSON text, or an object")
        value = super().to_internal_value(data)
        if isinstance(value, str):
            # YAML escapes ("\0") can make text no column stores; the service parses it again.
            problems = check_json_text(parse_spec(value))
            if problems:
                raise serializers.ValidationError(problems)
        return value


class PipelineListApi(ApiMixin, generics.ListAPIView):
    """The workspace's pipelines, each with its number of versions and latest number."""

    queryset = Pipeline.objects.none()
    filterset_class = NameFilter

    class OutputSerializer(serializers.ModelSerializer):
        version_count = serializers.IntegerField()
        latest_number = serializers.IntegerField(allow_null=True)

        class Meta:
            model = Pipeline
            fields = ["name", "description", "version_count", "latest_number", "created_at"]

    serializer_class = OutputSerializer

    def get_queryset(self) -> QuerySet[Pipeline]:
        return selectors.pipeline_list(workspace_of(self.request, self.kwargs["workspace"]))


class PipelineDetailApi(ApiMixin, APIView):
    """One pipeline, with its latest version's number."""

    @extend_schema(responses={200: PipelineListApi.OutputSerializer})
    def get(self, request: Request, workspace: str, name: str) -> Response:
        pipeline = selectors.get_pipeline_for_user(request.user, workspace, name)
        row = selectors.pipeline_list(pipeline.workspace).get(pk=pipeline.pk)
        return Response(PipelineListApi.OutputSerializer(row).data)


class PipelineVersionListApi(ApiMixin, generics.ListAPIView):
    """A pipeline's versions, newest first (spec left out: see the detail)."""

    queryset = PipelineVersion.objects.none()

    class OutputSerializer(serializers.ModelSerializer):
        parent = serializers.SerializerMethodField()  # type: ignore[assignment]
        step_count = serializers.IntegerField()
        created_by = serializers.SerializerMethodField()

        class Meta:
            model = PipelineVersion
            fields = [
                "number",
                "parent",
                "origin",
                "message",
                "digest",
                "step_count",
                "created_by",
                "created_at",
            ]

        @extend_schema_field({"type": "string", "nullable": True, "description": "name@N"})
        def get_parent(self, obj: Any) -> str | None:
            if obj.parent_number is None:
                return None
            return f"{obj.parent_pipeline}@{obj.parent_number}"

        @extend_schema_field({"type": "string", "nullable": True})
        def get_created_by(self, obj: PipelineVersion) -> str | None:
            return username_of(obj.created_by)

    class FilterSet(filters.FilterSet):
        digest = filters.CharFilter()
        origin = filters.ChoiceFilter(choices=VersionOrigin.choices)
        created_after, created_before = created_between()

        class Meta:
            model = PipelineVersion
            fields = ["digest", "origin"]

    serializer_class = OutputSerializer
    filterset_class = FilterSet

    def get_queryset(self) -> QuerySet[PipelineVersion]:
        kwargs = self.kwargs
        pipeline = selectors.get_pipeline_for_user(
            self.request.user, kwargs["workspace"], kwargs["name"]
        )
        return selectors.pipeline_version_list(pipeline)


class PipelineVersionDetailApi(ApiMixin, APIView):
    """One pipeline version: its source, resolved spec and steps."""

    @extend_schema(responses={200: PipelineVersionSerializer})
    def get(self, request: Request, workspace: str, name: str, number: int) -> Response:
        version = selectors.get_pipeline_version_for_user(request.user, workspace, name, number)
        return Response(PipelineVersionSerializer(version).data)


class PipelineVersionCreateApi(ApiMixin, APIView):
    """Store a spec as the pipeline's next version (the pipeline is created on its first
    push); an unchanged spec returns the latest version with 200."""

    class InputSerializer(serializers.Serializer):
        spec = SpecField(help_text="YAML/JSON text or an object: see /api/v1/spec-schema.json")
        message = serializers.CharField(allow_blank=True, required=False, default="")

    @extend_schema(
        request=InputSerializer,
        responses={201: PipelineVersionSerializer, 200: PipelineVersionSerializer},
    )
    def post(self, request: Request, workspace: str, name: str) -> Response:
        space = workspace_of(request, workspace, Role.EDITOR)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        previous = newest_id(
            PipelineVersion.objects.filter(pipeline__workspace=space, pipeline__name=name)
        )
        version = services.pipeline_version_create(
            space,
            name,
            data.validated_data["spec"],
            data.validated_data["message"],
            user=request.user,
        )
        return Response(PipelineVersionSerializer(version).data, status=created(version, previous))


class PipelineVersionCloneApi(ApiMixin, APIView):
    """A new version whose parent is this one: per-step changes applied to its spec, or a
    whole new spec."""

    class InputSerializer(serializers.Serializer):
        changes = JsonObjectField(
            required=False,
            help_text='{step: {"module"?: "name@N", "params"?: {...}, "inputs"?: {...}}}; '
            "a null param or input removes it.",
        )
        spec = serializers.CharField(
            required=False, trim_whitespace=False, help_text="A whole spec (YAML/JSON text)."
        )
        message = serializers.CharField(allow_blank=True, required=False, default="")

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if ("changes" in attrs) == ("spec" in attrs):
                raise serializers.ValidationError(
                    {"changes": ["give either changes or a whole spec"]}
                )
            return attrs

    @extend_schema(
        request=InputSerializer,
        responses={201: PipelineVersionSerializer, 200: PipelineVersionSerializer},
    )
    def post(self, request: Request, workspace: str, name: str, number: int) -> Response:
        version = selectors.get_pipeline_version_for_user(
            request.user, workspace, name, number, Role.EDITOR
        )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changes = data.validated_data.get("changes", data.validated_data.get("spec"))
        clone = services.pipeline_version_clone(
            version, changes, data.validated_data["message"], user=request.user
        )
        code = status.HTTP_200_OK if clone.pk == version.pk else status.HTTP_201_CREATED
        return Response(PipelineVersionSerializer(clone).data, status=code)


# --- datasets ------------------------------------------------------------------------------


class DatasetListApi(ApiMixin, generics.ListAPIView):
    """The workspace's datasets, each with its number of versions and latest size."""

    queryset = Dataset.objects.none()
    filterset_class = NameFilter

    class OutputSerializer(serializers.ModelSerializer):
        version_count = serializers.IntegerField()
        latest_number = serializers.IntegerField(allow_null=True)
        latest_size = serializers.IntegerField(allow_null=True)

        class Meta:
            model = Dataset
            fields = [
                "name",
                "description",
                "version_count",
                "latest_number",
                "latest_size",
                "created_at",
            ]

    serializer_class = OutputSerializer

    def get_queryset(self) -> QuerySet[Dataset]:
        return selectors.dataset_list(workspace_of(self.request, self.kwargs["workspace"]))


class DatasetDetailApi(ApiMixin, APIView):
    """One dataset, with its latest version's number and size."""

    @extend_schema(responses={200: DatasetListApi.OutputSerializer})
    def get(self, request: Request, workspace: str, name: str) -> Response:
        dataset = selectors.get_dataset_for_user(request.user, workspace, name)
        row = selectors.dataset_list(dataset.workspace).get(pk=dataset.pk)
        return Response(DatasetListApi.OutputSerializer(row).data)


class DatasetVersionListApi(ApiMixin, generics.ListAPIView):
    """A dataset's versions, newest first, each with its artifact."""

    queryset = DatasetVersion.objects.none()
    serializer_class = DatasetVersionSerializer

    class FilterSet(filters.FilterSet):
        sha256 = filters.CharFilter(field_name="artifact__sha256")
        created_after, created_before = created_between()

        class Meta:
            model = DatasetVersion
            fields = ["sha256"]

    filterset_class = FilterSet

    def get_queryset(self) -> QuerySet[DatasetVersion]:
        kwargs = self.kwargs
        dataset = selectors.get_dataset_for_user(
            self.request.user, kwargs["workspace"], kwargs["name"]
        )
        return selectors.dataset_version_list(dataset)


class DatasetVersionDetailApi(ApiMixin, APIView):
    """One dataset version and its artifact."""

    @extend_schema(responses={200: DatasetVersionSerializer})
    def get(self, request: Request, workspace: str, name: str, number: int) -> Response:
        version = selectors.get_dataset_version_for_user(request.user, workspace, name, number)
        return Response(DatasetVersionSerializer(version).data)


class DatasetVersionCreateApi(ApiMixin, APIView):
    """Upload a file as the dataset's next version (the dataset is created on its first
    upload); the same bytes again return the latest version with 200."""

    parser_classes = [MultiPartParser]

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField()
        media_type = serializers.RegexField(
            r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+(;.*)?$",
            max_length=100,
            required=False,
            help_text="text/csv, application/vnd.apache.parquet, ... (guessed from the file "
            "name when left out)",
        )
        message = serializers.CharField(allow_blank=True, required=False, default="")

    @extend_schema(
        request={"multipart/form-data": InputSerializer},
        responses={201: DatasetVersionSerializer, 200: DatasetVersionSerializer},
    )
    def post(self, request: Request, workspace: str, name: str) -> Response:
        space = workspace_of(request, workspace, Role.EDITOR)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        media_type = data.validated_data.get("media_type") or guess_media_type(upload.name)
        previous = newest_id(
            DatasetVersion.objects.filter(dataset__workspace=space, dataset__name=name)
        )
        version = services.dataset_version_create(
            space,
            name,
            upload.read(),
            media_type,
            data.validated_data["message"],
            user=request.user,
        )
        version = selectors.get_dataset_version_for_user(
            request.user, workspace, name, version.number
        )
        return Response(DatasetVersionSerializer(version).data, status=created(version, previous))
