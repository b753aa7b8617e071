"""Design-time REST API: modules, pipelines, datasets and the spec's schema.

It follows the conventions of workspaces/api.py; writes go through pipelines_app.services.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pipelines_app import selectors, services
from pipelines_app.interfaces import ENTRYPOINT_RE
from pipelines_app.models import (
    Dataset,
    DatasetVersion,
    Module,
    ModuleVersion,
    Pipeline,
    PipelineVersion,
    VersionOrigin,
)
from pipelines_app.serializers import (
    DatasetVersionSerializer,
    ModuleVersionPushedSerializer,
    ModuleVersionSerializer,
    PipelineVersionSerializer,
)
from pipelines_app.specs import SPEC_JSON_SCHEMA, parse_spec
from stepworks.outputs import guess_media_type
from workspaces.api import (
    ApiMixin,
    JsonDataField,
    JsonObjectField,
    NameFilter,
    check_json_text,
    created,
    created_between,
    newest_id,
    workspace_of,
)
from workspaces.conf import engine, team
from workspaces.errors import DomainError
from workspaces.models import Role
from workspaces.serializers import username_of

# --- conventions ---------------------------------------------------------------------------

# --- meta ----------------------------------------------------------------------------------


class SpecSchemaApi(ApiMixin, APIView):
    """The JSON Schema of a pipeline spec (what `spec` of a pipeline version accepts)."""

    permission_classes = [AllowAny]

    @extend_schema(responses={200: OpenApiResponse(description="A JSON Schema document.")})
    def get(self, request: Request) -> Response:
        return Response(SPEC_JSON_SCHEMA)


# --- modules -------------------------------------------------------------------------------


class ModuleListApi(ApiMixin, generics.ListAPIView[Module]):
    """The workspace's modules, each with its number of versions and latest number."""

    queryset = Module.objects.none()
    filterset_class = NameFilter

    class OutputSerializer(serializers.ModelSerializer[Module]):
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


class ModuleVersionListApi(ApiMixin, generics.ListAPIView[ModuleVersion]):
    """A module's versions, newest first (files and interface left out: see the detail)."""

    queryset = ModuleVersion.objects.none()

    class OutputSerializer(serializers.ModelSerializer[ModuleVersion]):
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

    class FilterSet(filters.FilterSet):  # type: ignore[misc]
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

    class InputSerializer(serializers.Serializer[Any]):
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

    class UploadSerializer(serializers.Serializer[Any]):
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
        responses={201: ModuleVersionPushedSerializer, 200: ModuleVersionPushedSerializer},
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
        body = {**ModuleVersionSerializer(version).data, "breaks": breaks_of(version)}
        return Response(body, status=created(version, previous))


def breaks_of(version: ModuleVersion) -> list[dict[str, Any]]:
    """The pipeline versions that switching to `version` would break, and why (the module
    version page's list): [{"pipeline", "steps": [{"step", "uses", "problems"}]}]."""
    return [
        {
            "pipeline": entry["pipeline_version"].ref,
            "steps": [
                {"step": step["name"], "uses": step["uses"], "problems": step["problems"]}
                for step in entry["steps"]
                if step["problems"]
            ],
        }
        for entry in selectors.module_version_breakage(version)
        if entry["breaks"]
    ]


def _uploaded_sources(validated: dict[str, Any]) -> dict[str, str]:
    """{relative path: text} of uploaded files (bytes that are not UTF-8 are kept, so the
    inspection names the file)."""
    limit = engine().max_source_bytes
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


class PipelineListApi(ApiMixin, generics.ListAPIView[Pipeline]):
    """The workspace's pipelines, each with its number of versions and latest number."""

    queryset = Pipeline.objects.none()
    filterset_class = NameFilter

    class OutputSerializer(serializers.ModelSerializer[Pipeline]):
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


class PipelineVersionListApi(ApiMixin, generics.ListAPIView[PipelineVersion]):
    """A pipeline's versions, newest first (spec left out: see the detail)."""

    queryset = PipelineVersion.objects.none()

    class OutputSerializer(serializers.ModelSerializer[PipelineVersion]):
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

    class FilterSet(filters.FilterSet):  # type: ignore[misc]
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

    class InputSerializer(serializers.Serializer[Any]):
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

    class InputSerializer(serializers.Serializer[Any]):
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


class PipelineVersionUpdateApi(ApiMixin, APIView):
    """A new version pinning the latest version of every module (or of one step's): parent
    this one, nothing else changed. 409 when it already pins the latest."""

    class InputSerializer(serializers.Serializer[Any]):
        step = serializers.CharField(required=False, allow_null=True, max_length=100)

    @extend_schema(request=InputSerializer, responses={201: PipelineVersionSerializer})
    def post(self, request: Request, workspace: str, name: str, number: int) -> Response:
        version = selectors.get_pipeline_version_for_user(
            request.user, workspace, name, number, Role.EDITOR
        )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        updated = services.pipeline_version_update(
            version, data.validated_data.get("step"), user=request.user
        )
        return Response(PipelineVersionSerializer(updated).data, status=status.HTTP_201_CREATED)


# --- datasets ------------------------------------------------------------------------------


class DatasetListApi(ApiMixin, generics.ListAPIView[Dataset]):
    """The workspace's datasets, each with its number of versions and latest size."""

    queryset = Dataset.objects.none()
    filterset_class = NameFilter

    class OutputSerializer(serializers.ModelSerializer[Dataset]):
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


class DatasetVersionListApi(ApiMixin, generics.ListAPIView[DatasetVersion]):
    """A dataset's versions, newest first, each with its artifact."""

    queryset = DatasetVersion.objects.none()
    serializer_class = DatasetVersionSerializer

    class FilterSet(filters.FilterSet):  # type: ignore[misc]
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

    def body_limit(self) -> int:
        return team().dataset_max_bytes  # STEPWORKS_DATASET_MAX_BYTES, not the API's own

    class InputSerializer(serializers.Serializer[Any]):
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
            upload.file,  # read in chunks: a big upload is a temp file, never in memory
            media_type,
            data.validated_data["message"],
            user=request.user,
        )
        version = selectors.get_dataset_version_for_user(
            request.user, workspace, name, version.number
        )
        return Response(DatasetVersionSerializer(version).data, status=created(version, previous))
