"""Retention per workspace (issue 12): owners set what is kept; a dry run says what would
go and what it frees; applying deletes the rest, never a pinned run, a run still going, a
promoted version's runs or a sweep's promoted variant."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from runs_app import retention
from runs_app.models import PipelineRun, RunStatus, Sweep, SweepEvent, SweepEventKind
from tests.factories import chain
from tests.helpers import succeed
from tests.test_api_support import api_client

pytestmark = pytest.mark.django_db
API = "/api/v1/workspaces/lab/retention"


def _finished_runs(world: Any, count: int, **fields: Any) -> list[PipelineRun]:
    """Runs that ran (one step each, its output stored), oldest first."""
    from runs_app import scheduler
    from tests.helpers import next_queued

    version = chain(world.workspace, length=1)
    runs = []
    for i in range(count):
        run = scheduler.run_create(version, param_overrides={"s0.k": i})
        step = next_queued(run=run)
        assert step is not None
        succeed(step, {"out": (f"output {i} ".encode() * 100, "text/plain")})
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED
        runs.append(run)
    for age, run in enumerate(reversed(runs)):  # the first is the oldest
        PipelineRun.objects.filter(pk=run.pk).update(
            created_at=timezone.now() - timedelta(days=age), **fields
        )
    return runs


def test_a_policy_keeps_the_newest_and_the_recent_and_a_dry_run_says_what_goes(
    world: Any,
) -> None:
    runs = _finished_runs(world, 6)  # ages 5, 4, 3, 2, 1, 0 days
    PipelineRun.objects.filter(pk=runs[0].pk).update(pinned=True)

    retention.policy_set(world.workspace, enabled=True, keep_last=2, keep_days=3)
    plan = retention.retention_plan(world.workspace)

    # Kept: the newest 2 (ages 0 and 1 day), the last 3 days (ages 0-2: a run 3 days old is
    # a moment past the cut-off) and the pinned one (age 5); ages 3 and 4 expire.
    assert plan.runs == [runs[1].pk, runs[2].pk]
    assert plan.artifacts == 2 and plan.bytes == sum(
        len(f"output {i} ".encode() * 100) for i in (1, 2)
    )
    assert PipelineRun.objects.count() == 6  # a plan deletes nothing

    done = retention.retention_apply(world.workspace)

    assert done.runs == plan.runs
    assert set(PipelineRun.objects.values_list("pk", flat=True)) == {
        runs[0].pk,
        *(r.pk for r in runs[3:]),
    }


def test_promoted_versions_and_variants_are_always_kept(world: Any) -> None:
    runs = _finished_runs(world, 4)
    sweep = Sweep.objects.create(
        workspace=world.workspace, name="s", base_version=runs[0].pipeline_version
    )
    PipelineRun.objects.filter(pk=runs[0].pk).update(
        sweep=sweep, variant={"s0": "wide", "replicate": 0}
    )
    PipelineRun.objects.filter(pk=runs[1].pk).update(
        sweep=sweep, variant={"s0": "narrow", "replicate": 0}
    )
    SweepEvent.objects.create(
        sweep=sweep, kind=SweepEventKind.PROMOTED, data={"variant": {"s0": "wide"}, "version": 0}
    )
    retention.policy_set(world.workspace, enabled=True, keep_last=1, keep_days=None)

    plan = retention.retention_plan(world.workspace)

    assert plan.runs == [runs[1].pk, runs[2].pk]  # the promoted variant's run stays


def test_owners_set_it_through_the_api_and_others_may_only_read_it(world: Any) -> None:
    _finished_runs(world, 3)
    owner, editor = api_client(world.owner), api_client(world.editor)

    off = editor.get(f"{API}/").json()
    refused = editor.put(
        f"{API}/", {"enabled": True, "keep_last": 1, "keep_days": None}, format="json"
    )
    empty = owner.put(
        f"{API}/", {"enabled": True, "keep_last": None, "keep_days": None}, format="json"
    )
    saved = owner.put(
        f"{API}/", {"enabled": True, "keep_last": 1, "keep_days": None}, format="json"
    )
    applied = owner.post(f"{API}/apply/")

    assert off["policy"]["enabled"] is False and off["plan"]["runs"] == []
    assert refused.status_code == 403
    assert empty.status_code == 400 and "keep_last" in empty.json()["error"]["fields"]
    assert saved.status_code == 200 and len(saved.json()["plan"]["runs"]) == 2
    assert applied.json()["deleted"] == 2 and PipelineRun.objects.count() == 1


def test_the_retention_page_shows_the_plan_and_owners_edit_it(world: Any) -> None:
    _finished_runs(world, 3)
    page = Client()
    page.force_login(world.owner)

    saved = page.post("/w/lab/retention/", {"enabled": "on", "keep_last": "2"}, follow=True)
    bad = page.post("/w/lab/retention/", {"enabled": "on", "keep_last": "two"})
    applied = page.post("/w/lab/retention/", {"action": "apply"}, follow=True)

    assert "It would delete <strong>1</strong> run(s)" in saved.content.decode()
    assert bad.status_code == 400 and "a whole number" in bad.content.decode()
    assert "Deleted 1 run(s)" in applied.content.decode()
    viewer = Client()
    viewer.force_login(world.viewer)
    shown = viewer.get("/w/lab/retention/").content.decode()
    assert "Only owners change it." in shown and 'name="keep_last"' not in shown
    assert viewer.post("/w/lab/retention/", {"action": "apply"}).status_code == 403


def test_the_storage_page_and_api_show_where_the_bytes_are(world: Any) -> None:
    runs = _finished_runs(world, 3)
    retention.policy_set(world.workspace, enabled=True, keep_last=1, keep_days=None)
    page = Client()
    page.force_login(world.viewer)

    body = api_client(world.viewer).get("/api/v1/workspaces/lab/storage/").json()
    html = page.get("/w/lab/storage/").content.decode()

    sizes = [len(f"output {i} ".encode() * 100) for i in range(3)]
    assert body["total_bytes"] == sum(sizes) and body["artifacts"] == 3
    assert body["by_pipeline"] == [{"pipeline": "chain", "bytes": sum(sizes), "artifacts": 3}]
    assert body["by_step"][0]["step"] == "s0"
    assert body["by_media_type"][0]["media_type"].startswith("text/plain")
    assert body["over_time"][-1]["bytes"] == sum(sizes)
    assert body["biggest"][0]["run"] in {r.pk for r in runs}
    assert body["retention"] == {"runs": 2, "artifacts": 2, "bytes": sizes[0] + sizes[1]}
    assert 'data-plotly="storage-by-pipeline"' in html and "The biggest artifacts" in html


def test_a_count_or_age_out_of_range_is_a_400_naming_it(world: Any) -> None:
    owner = api_client(world.owner)
    page = Client()
    page.force_login(world.owner)

    huge = owner.put(
        f"{API}/", {"enabled": False, "keep_last": 2**62, "keep_days": 1}, format="json"
    )
    on_page = page.post("/w/lab/retention/", {"enabled": "on", "keep_last": str(10**12)})

    assert huge.status_code == 400 and "keep_last" in huge.json()["error"]["fields"]
    assert on_page.status_code == 400 and "from 1 to 1000000" in on_page.content.decode()
