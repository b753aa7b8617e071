"""/api/v1/: one route per operation (HackSoft style: `create/` and actions get their own
path), the OpenAPI schema, the offline docs page and the pipeline spec's JSON Schema.

Workspace, module, pipeline, dataset and step names are slugs; artifacts are addressed by
their sha256.
"""

from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from pipelines_app import api as design
from runs_app import api as runtime
from runs_app.sweeps import api as sweep_api
from runs_app.webhooks import api as webhook_api
from workspaces import api as teams

app_name = "api"


class SwaggerView(SpectacularSwaggerSplitView):
    """The Swagger page, its script a file of its own (the CSP allows no inline script).
    Without metadata, OPTIONS is a plain 405: DRF's metadata answer would be rendered by the
    page's template renderer, which has no template for it (a 500)."""

    metadata_class = None


class RedocView(SpectacularRedocView):
    metadata_class = None


module_patterns: list[URLPattern | URLResolver] = [
    path("", design.ModuleListApi.as_view(), name="module-list"),
    path("<slug:name>/", design.ModuleDetailApi.as_view(), name="module-detail"),
    path(
        "<slug:name>/versions/", design.ModuleVersionListApi.as_view(), name="module-version-list"
    ),
    path(
        "<slug:name>/versions/create/",
        design.ModuleVersionCreateApi.as_view(),
        name="module-version-create",
    ),
    path(
        "<slug:name>/versions/<int:number>/",
        design.ModuleVersionDetailApi.as_view(),
        name="module-version-detail",
    ),
    path(
        "<slug:name>/versions/<int:number>/forget/",
        runtime.ModuleVersionForgetApi.as_view(),
        name="module-version-forget",
    ),
]

pipeline_patterns: list[URLPattern | URLResolver] = [
    path("", design.PipelineListApi.as_view(), name="pipeline-list"),
    path("<slug:name>/", design.PipelineDetailApi.as_view(), name="pipeline-detail"),
    path(
        "<slug:name>/versions/",
        design.PipelineVersionListApi.as_view(),
        name="pipeline-version-list",
    ),
    path(
        "<slug:name>/versions/create/",
        design.PipelineVersionCreateApi.as_view(),
        name="pipeline-version-create",
    ),
    path(
        "<slug:name>/versions/<int:number>/",
        design.PipelineVersionDetailApi.as_view(),
        name="pipeline-version-detail",
    ),
    path(
        "<slug:name>/versions/<int:number>/clone/",
        design.PipelineVersionCloneApi.as_view(),
        name="pipeline-version-clone",
    ),
    path(
        "<slug:name>/versions/<int:number>/update/",
        design.PipelineVersionUpdateApi.as_view(),
        name="pipeline-version-update",
    ),
]

dataset_patterns: list[URLPattern | URLResolver] = [
    path("", design.DatasetListApi.as_view(), name="dataset-list"),
    path("<slug:name>/", design.DatasetDetailApi.as_view(), name="dataset-detail"),
    path(
        "<slug:name>/versions/", design.DatasetVersionListApi.as_view(), name="dataset-version-list"
    ),
    path(
        "<slug:name>/versions/create/",
        design.DatasetVersionCreateApi.as_view(),
        name="dataset-version-create",
    ),
    path(
        "<slug:name>/versions/<int:number>/",
        design.DatasetVersionDetailApi.as_view(),
        name="dataset-version-detail",
    ),
]

step_patterns: list[URLPattern | URLResolver] = [
    path("", runtime.StepDetailApi.as_view(), name="step-detail"),
    path("log/", runtime.StepLogApi.as_view(), name="step-log"),
    path("metrics/", runtime.StepMetricListApi.as_view(), name="step-metric-list"),
    path("forget/", runtime.StepForgetApi.as_view(), name="step-forget"),
]

run_patterns: list[URLPattern | URLResolver] = [
    path("", runtime.RunListApi.as_view(), name="run-list"),
    path("create/", runtime.RunCreateApi.as_view(), name="run-create"),
    path("from-source/", runtime.RunFromSourceApi.as_view(), name="run-from-source"),
    path("compare/", runtime.RunCompareApi.as_view(), name="run-compare"),
    path("delete/", runtime.RunDeleteApi.as_view(), name="run-delete"),
    path("archive/", runtime.RunArchiveApi.as_view(), name="run-archive"),
    path("<int:run_id>/", runtime.RunDetailApi.as_view(), name="run-detail"),
    path("<int:run_id>/cancel/", runtime.RunCancelApi.as_view(), name="run-cancel"),
    path("<int:run_id>/rerun/", runtime.RunRerunApi.as_view(), name="run-rerun"),
    path("<int:run_id>/clone/", runtime.RunCloneApi.as_view(), name="run-clone"),
    path("<int:run_id>/forget/", runtime.RunForgetApi.as_view(), name="run-forget"),
    path("<int:run_id>/pin/", runtime.RunPinApi.as_view(), name="run-pin"),
    path("<int:run_id>/annotations/", runtime.RunAnnotationsApi.as_view(), name="run-annotations"),
    path("<int:run_id>/events/", runtime.RunEventListApi.as_view(), name="run-event-list"),
    path("<int:run_id>/lineage/", runtime.RunLineageApi.as_view(), name="run-lineage"),
    path("<int:run_id>/outputs.zip", runtime.RunOutputsZipApi.as_view(), name="run-outputs-zip"),
    path("<int:run_id>/steps/<slug:step>/", include(step_patterns)),
]

sweep_patterns: list[URLPattern | URLResolver] = [
    path("", sweep_api.SweepListApi.as_view(), name="sweep-list"),
    path("create/", sweep_api.SweepCreateApi.as_view(), name="sweep-create"),
    path("<int:sweep_id>/", sweep_api.SweepDetailApi.as_view(), name="sweep-detail"),
    path("<int:sweep_id>/runs/", sweep_api.SweepRunListApi.as_view(), name="sweep-run-list"),
    path("<int:sweep_id>/extend/", sweep_api.SweepExtendApi.as_view(), name="sweep-extend"),
    path("<int:sweep_id>/cancel/", sweep_api.SweepCancelApi.as_view(), name="sweep-cancel"),
    path("<int:sweep_id>/promote/", sweep_api.SweepPromoteApi.as_view(), name="sweep-promote"),
    path("<int:sweep_id>/compare/", sweep_api.SweepCompareApi.as_view(), name="sweep-compare"),
    path(
        "<int:sweep_id>/metrics/", sweep_api.SweepMetricListApi.as_view(), name="sweep-metric-list"
    ),
]

webhook_patterns: list[URLPattern | URLResolver] = [
    path("", webhook_api.WebhookListApi.as_view(), name="webhook-list"),
    path("create/", webhook_api.WebhookCreateApi.as_view(), name="webhook-create"),
    path("<int:webhook_id>/delete/", webhook_api.WebhookDeleteApi.as_view(), name="webhook-delete"),
    path("<int:webhook_id>/test/", webhook_api.WebhookTestApi.as_view(), name="webhook-test"),
    path(
        "<int:webhook_id>/deliveries/",
        webhook_api.WebhookDeliveryListApi.as_view(),
        name="webhook-delivery-list",
    ),
]

artifact_patterns: list[URLPattern | URLResolver] = [
    path("<str:sha256>/", runtime.ArtifactDetailApi.as_view(), name="artifact-detail"),
    path("<str:sha256>/download/", runtime.ArtifactDownloadApi.as_view(), name="artifact-download"),
]

workspace_patterns: list[URLPattern | URLResolver] = [
    path("", teams.WorkspaceDetailApi.as_view(), name="workspace-detail"),
    path("members/", teams.MemberListApi.as_view(), name="member-list"),
    path("members/set/", teams.MemberSetApi.as_view(), name="member-set"),
    path("rename/", teams.WorkspaceRenameApi.as_view(), name="workspace-rename"),
    path("audit/", teams.AuditListApi.as_view(), name="audit-list"),
    path("invites/", teams.InviteListApi.as_view(), name="invite-list"),
    path("invites/create/", teams.InviteCreateApi.as_view(), name="invite-create"),
    path("invites/<int:invite_id>/revoke/", teams.InviteRevokeApi.as_view(), name="invite-revoke"),
    path("retention/", runtime.RetentionApi.as_view(), name="retention"),
    path("retention/apply/", runtime.RetentionApplyApi.as_view(), name="retention-apply"),
    path("storage/", runtime.StorageApi.as_view(), name="storage"),
    path("modules/", include(module_patterns)),
    path("pipelines/", include(pipeline_patterns)),
    path("datasets/", include(dataset_patterns)),
    path("runs/", include(run_patterns)),
    path("sweeps/", include(sweep_patterns)),
    path("webhooks/", include(webhook_patterns)),
    path("artifacts/", include(artifact_patterns)),
]

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", RedocView.as_view(url_name="api:schema"), name="redoc"),
    path("spec-schema.json", design.SpecSchemaApi.as_view(), name="spec-schema"),
    path("workspaces/", teams.WorkspaceListApi.as_view(), name="workspace-list"),
    path("workspaces/create/", teams.WorkspaceCreateApi.as_view(), name="workspace-create"),
    path("workspaces/<slug:workspace>/", include(workspace_patterns)),
    path("workers/", runtime.WorkerListApi.as_view(), name="worker-list"),
]
