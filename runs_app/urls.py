"""Run-time pages: the runs list, the run explorer, steps, the workbench, artifacts,
lineage, downloads, sweeps.

A digest is matched as 64 lowercase hex characters and a step name as a slug, so nothing
path-like from a URL reaches a view, let alone the filesystem.
"""

from django.urls import path, register_converter

from runs_app import dataset_views, pipeline_views, views, workbench_views, worker_views
from runs_app.sweeps import views as sweep_views
from runs_app.webhooks import views as webhook_views


class Sha256Converter:
    regex = "[0-9a-f]{64}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(Sha256Converter, "sha256")

app_name = "runs"

run = "w/<slug:slug>/runs/<int:run_id>/"
step = run + "steps/<slug:name>/"
artifact = "w/<slug:slug>/artifacts/<sha256:sha256>/"
sweep = "w/<slug:slug>/sweeps/<int:sweep_id>/"

version = "w/<slug:slug>/pipelines/<slug:name>/<int:number>/"

urlpatterns = [
    path("workers/", worker_views.workers_page, name="workers"),
    path("metrics", worker_views.metrics, name="metrics"),
    path("w/<slug:slug>/", pipeline_views.workspace_home, name="workspace"),
    path(version, pipeline_views.pipeline_version_detail, name="pipeline_version"),
    path(version + "run/", pipeline_views.pipeline_run, name="pipeline_run"),
    path("w/<slug:slug>/runs/", views.run_list, name="list"),
    path("w/<slug:slug>/runs/compare/", views.run_compare, name="compare"),
    path("w/<slug:slug>/runs/bulk/", views.runs_bulk, name="bulk"),
    path("w/<slug:slug>/retention/", views.retention_page, name="retention"),
    path("w/<slug:slug>/storage/", views.storage_page, name="storage"),
    path("w/<slug:slug>/datasets/", dataset_views.dataset_list, name="datasets"),
    path("w/<slug:slug>/webhooks/", webhook_views.webhooks_page, name="webhooks"),
    path("w/<slug:slug>/datasets/<slug:name>/", dataset_views.dataset_detail, name="dataset"),
    path(run, views.run_detail, name="detail"),
    path(run + "live/", views.run_live, name="live"),
    path(run + "cancel/", views.run_cancel, name="cancel"),
    path(run + "rerun/", views.run_rerun, name="rerun"),
    path(run + "clone/", views.run_clone, name="clone"),
    path(run + "forget/", views.run_forget, name="forget"),
    path(run + "pin/", views.run_pin, name="pin"),
    path(run + "annotations/", views.run_annotations, name="annotations"),
    path(run + "lineage/", views.run_lineage, name="lineage"),
    path(run + "outputs.zip", views.run_outputs_zip, name="outputs_zip"),
    path(step, views.step_detail, name="step"),
    path(step + "log/", views.step_log, name="step_log"),
    path(step + "metrics/", views.step_metrics, name="step_metrics"),
    path(step + "forget/", views.step_forget, name="step_forget"),
    path(step + "workbench/", workbench_views.workbench_page, name="workbench"),
    path(
        step + "workbench/interface/",
        workbench_views.workbench_interface,
        name="workbench_interface",
    ),
    path(run + "workbench/", workbench_views.workbench_result, name="workbench_result"),
    path(run + "keep/", workbench_views.workbench_keep, name="workbench_keep"),
    path(
        "w/<slug:slug>/modules/<slug:name>/<int:number>/forget/",
        views.module_version_forget,
        name="module_version_forget",
    ),
    path(artifact, views.artifact_detail, name="artifact"),
    path(artifact + "download/", views.artifact_download, name="artifact_download"),
    path(artifact + "image/", views.artifact_image, name="artifact_image"),
    path(artifact + "frame/", views.artifact_frame, name="artifact_frame"),
    path("w/<slug:slug>/sweeps/", sweep_views.sweep_list, name="sweep_list"),
    path("w/<slug:slug>/sweeps/new/", sweep_views.sweep_new, name="sweep_new"),
    path(sweep, sweep_views.sweep_detail, name="sweep_detail"),
    path(sweep + "live/", sweep_views.sweep_live, name="sweep_live"),
    path(sweep + "cancel/", sweep_views.sweep_cancel, name="sweep_cancel"),
    path(sweep + "extend/", sweep_views.sweep_extend, name="sweep_extend"),
    path(sweep + "promote/", sweep_views.sweep_promote, name="sweep_promote"),
    path(sweep + "compare/", sweep_views.sweep_compare, name="sweep_compare"),
]
