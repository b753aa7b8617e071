"""The datasets pages: the workspace's datasets with an upload form, and one dataset's
versions (size, media type, sha256, message, who and when, which runs read each) with a
preview. They show run-time rows (the runs that read a version), so they live here, above
pipelines_app, as the pipeline-version pages do.

An upload is refused by its Content-Length before a byte of it is read (413 over
STEPWORKS_DATASET_MAX_BYTES): the view is exempt from the CSRF middleware, which would parse
the whole body to find the form's token, and checks CSRF itself once the size is known. The
body then goes to a temp file as it arrives (never into memory), and from there to the
store in chunks. The page's script (static/js/upload.js) sends it with XMLHttpRequest to
show a progress bar; without the script the form posts as any form does.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from artifacts import previews
from pipelines_app import selectors as design
from pipelines_app.forms import DatasetUploadForm
from pipelines_app.services import dataset_version_create
from runs_app import selectors
from stepworks.outputs import guess_media_type
from workspaces.conf import team
from workspaces.errors import DomainError
from workspaces.models import Role, Workspace
from workspaces.selectors import get_workspace_for_user, role_allows

XHR = "XMLHttpRequest"


@csrf_exempt  # checked in _upload, once the Content-Length is known to be acceptable
@login_required
@require_http_methods(["GET", "POST"])
def dataset_list(request: HttpRequest, slug: str) -> HttpResponse:
    """The workspace's datasets; editors upload a new dataset or version here (POST)."""
    if request.method == "POST":
        return _upload(request, slug)
    workspace = get_workspace_for_user(request.user, slug)
    return _list_page(request, workspace, DatasetUploadForm())


def _list_page(
    request: HttpRequest, workspace: Workspace, form: DatasetUploadForm, status: int = 200
) -> TemplateResponse:
    context = {
        "workspace": workspace,
        "datasets": design.dataset_list(workspace).order_by("name"),
        "form": form,
        "can_edit": role_allows(workspace, Role.EDITOR),
        "max_bytes": team().dataset_max_bytes,
    }
    return TemplateResponse(request, "runs_app/dataset_list.html", context, status=status)


@login_required
def dataset_detail(request: HttpRequest, slug: str, name: str) -> TemplateResponse:
    """One dataset: every version with what the runs read, and a preview of one version
    (`?version=N`, the newest by default)."""
    dataset = design.get_dataset_for_user(request.user, slug, name)
    workspace = dataset.workspace
    versions = list(design.dataset_version_list(dataset))
    readers = selectors.artifact_reader_runs([v.artifact_id for v in versions])
    wanted = request.GET.get("version", "")
    shown = next(
        (v for v in versions if str(v.number) == wanted), versions[0] if versions else None
    )
    context = {
        "workspace": workspace,
        "dataset": dataset,
        "rows": [{"version": v, "runs": readers.get(v.artifact_id, [])} for v in versions],
        "shown": shown,
        "preview": previews.artifact_preview(shown.artifact) if shown else None,
        "form": DatasetUploadForm(initial={"name": dataset.name}),
        "can_edit": role_allows(workspace, Role.EDITOR),
        "max_bytes": team().dataset_max_bytes,
    }
    return TemplateResponse(request, "runs_app/dataset_detail.html", context)


# --- the upload --------------------------------------------------------------------------------


def _upload(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = get_workspace_for_user(request.user, slug, Role.EDITOR)  # before the body
    limit = team().dataset_max_bytes
    length = _content_length(request)
    if length > limit:
        message = (
            f"The file is too large: the upload is {length:,} bytes and datasets are limited "
            f"to {limit:,} (STEPWORKS_DATASET_MAX_BYTES)."
        )
        return _refused(request, workspace, message, 413)
    request.upload_handlers = [TemporaryFileUploadHandler(request)]  # to disk as it arrives
    refusal = _csrf_refusal(request)
    if refusal is not None:
        return refusal
    form = DatasetUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        problems = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in form.errors.items())
        return _refused(request, workspace, problems, 400, form)
    data = form.cleaned_data
    upload = data["file"]
    if upload.size > limit:  # a body sent without a Content-Length (chunked) is sized here
        upload.close()
        message = f"The file is too large: datasets are limited to {limit:,} bytes."
        return _refused(request, workspace, message, 413, form)
    try:
        version = dataset_version_create(
            workspace,
            data["name"],
            upload.file,
            data["media_type"] or guess_media_type(upload.name or ""),
            data["message"],
            user=request.user,
        )
    except DomainError as error:
        return _refused(request, workspace, str(error), error.status_code, form)
    finally:
        upload.close()  # the temp file goes now, not when the request is collected
    url = reverse("runs:dataset", args=[workspace.slug, version.dataset.name])
    text = f"Stored {version.ref} ({upload.size:,} bytes)."
    messages.success(request, text)  # shown on the dataset's page, where both ways lead
    if request.headers.get("X-Requested-With") == XHR:
        return JsonResponse({"url": url, "ref": version.ref, "message": text}, status=201)
    return redirect(url)


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _csrf_refusal(request: HttpRequest) -> HttpResponse | None:
    """The CSRF middleware's check, run here (the view is exempt from the middleware's own,
    which reads the body before anything could refuse it by its size)."""
    check = CsrfViewMiddleware(lambda _: HttpResponse())
    check.process_request(request)
    return check.process_view(request, lambda _: HttpResponse(), (), {})


def _refused(
    request: HttpRequest,
    workspace: Workspace,
    message: str,
    status: int,
    form: DatasetUploadForm | None = None,
) -> HttpResponse:
    if request.headers.get("X-Requested-With") == XHR:
        return JsonResponse({"error": message}, status=status)
    page_form: Any = form or DatasetUploadForm()
    response = _list_page(request, workspace, page_form, status=status)
    response.context_data["error"] = message  # type: ignore[index]
    return response
