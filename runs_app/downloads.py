"""The whole-run zip: its manifest from a run's outputs, streamed from the store.

`GET .../runs/<id>/outputs.zip` (page and API) answers with this; its `manifest.json` is
{"run", "files": [{"path", "sha256", "size", "step", "output"}], "missing": [{"step",
"output", "sha256"}], "lineage"}: outputs whose bytes the store lost are left out of the
zip and listed under "missing".

Every download that hands out bytes (an artifact's or a run's zip, page or API) is recorded
in the workspace's audit trail (`audited`).
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpResponseBase, StreamingHttpResponse

from artifacts.http import stored_chunks, zip_response
from artifacts.models import ArtifactKind
from artifacts.store import (
    artifact_filename,
    artifacts_missing,
    directory_manifest,
    safe_arcname,
)
from runs_app.models import StepOutput
from runs_app.selectors import run_lineage
from workspaces.audit import audit_record
from workspaces.errors import DomainError
from workspaces.models import AuditVerb


def run_zip_files(
    run: Any, steps: list[str] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every output file of a run (or of the named steps), as manifest rows:
    [{"path", "sha256", "size", "step", "output"}]; a directory output adds one row per file.
    And the outputs whose bytes are missing: [{"step", "output", "sha256"}].

    Unknown step names raise DomainError (the caller maps it to 400).
    """
    outputs = (
        StepOutput.objects.filter(step__run=run)
        .select_related("artifact", "step")
        .order_by("step__position", "name")
    )
    if steps:
        known = set(run.steps.values_list("name", flat=True))
        unknown = sorted(set(steps) - known)
        if unknown:
            raise DomainError(
                "invalid_step",
                "No such step in this run.",
                {"step": [f"unknown step {unknown[0]!r}"]},
            )
        outputs = outputs.filter(step__name__in=steps)
    rows = list(outputs)
    lost = {a.pk for a in artifacts_missing(out.artifact for out in rows)}
    files: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    for out in rows:
        artifact = out.artifact
        step_name = out.step.name
        if artifact.pk in lost:
            missing.append({"step": step_name, "output": out.name, "sha256": artifact.sha256})
            continue
        if artifact.kind == ArtifactKind.DIRECTORY:
            for entry in directory_manifest(artifact):
                files.append(
                    {
                        "path": f"{step_name}/{safe_arcname(out.name)}/{entry['path']}",
                        "sha256": entry["sha256"],
                        "size": entry["size"],
                        "step": step_name,
                        "output": out.name,
                    }
                )
        else:
            files.append(
                {
                    "path": f"{step_name}/{safe_arcname(artifact_filename(artifact, out.name))}",
                    "sha256": artifact.sha256,
                    "size": artifact.size,
                    "step": step_name,
                    "output": out.name,
                }
            )
    return files, missing


def run_zip_response(run: Any, steps: list[str] | None = None) -> StreamingHttpResponse:
    """The whole run (or the chosen steps) as one streamed zip with `manifest.json` first:
    {"run", "files": [...], "missing": [...], "lineage"} (see the module docstring).

    Files are stored uncompressed (model outputs rarely compress and the size is then known
    up front, so the response has a Content-Length); memory stays flat whatever their size.
    """
    import zipstream

    files, missing = run_zip_files(run, steps)
    manifest = {"run": run.pk, "files": files, "missing": missing, "lineage": run_lineage(run)}
    stream = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=True)
    stream.add(json.dumps(manifest, indent=2, sort_keys=True).encode(), "manifest.json")
    for row in files:
        stream.add(stored_chunks(row["sha256"]), row["path"], size=row["size"])
    suffix = "" if not steps else "-" + "-".join(sorted(set(steps)))[:80]
    return zip_response(stream, f"run-{run.pk}{suffix}-outputs.zip")


def audited(
    response: HttpResponseBase, user: Any, artifact: Any = None, run: Any = None
) -> HttpResponseBase:
    """Record the download `response` answers in the audit trail: a whole one (200), the
    first piece of a ranged one (206 from byte 0), or a redirect to a presigned URL of the
    bucket (302: the URL is the bytes, for a minute). A 304, a 416 or a later piece of a
    resumed download hands out nothing new and records nothing."""
    status = response.status_code
    first_piece = status == 206 and response.get("Content-Range", "").startswith("bytes 0-")
    if status not in (200, 302) and not first_piece:
        return response
    if run is not None:
        audit_record(run.workspace_id, user, AuditVerb.RUN_ZIP_DOWNLOADED, f"run {run.pk}")
    elif artifact is not None:
        audit_record(
            artifact.workspace_id,
            user,
            AuditVerb.ARTIFACT_DOWNLOADED,
            f"artifact {artifact.sha256[:12]}",
            {"sha256": artifact.sha256, "size": artifact.size, "media_type": artifact.media_type},
        )
    return response
