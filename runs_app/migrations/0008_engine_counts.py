"""Each step counts the upstream steps it still waits for (`waiting`) and records the
runtime its key was made with (`runtime`): the scheduler then advances a run by the steps
that changed, and a claim checks the runtime in its one UPDATE. Open steps of runs in
progress get both from what they already hold."""

from typing import Any

from django.db import migrations, models

OPEN = ("pending", "queued", "running", "following")
DONE_OK = ("succeeded", "reused")


def _upstream(spec_step: Any) -> set[str]:
    inputs = spec_step.get("inputs") or {}
    return {
        str(binding).split(".", 1)[0]
        for binding in inputs.values()
        if isinstance(binding, str) and not binding.startswith("dataset:") and "." in binding
    }


def backfill(apps: Any, schema_editor: Any) -> None:
    StepRun = apps.get_model("runs_app", "StepRun")
    open_steps = StepRun.objects.filter(status__in=OPEN).select_related("run__pipeline_version")
    done: dict[int, set[str]] = {}
    for step in open_steps.iterator():
        if step.run_id not in done:
            done[step.run_id] = set(
                StepRun.objects.filter(run_id=step.run_id, status__in=DONE_OK).values_list(
                    "name", flat=True
                )
            )
        spec_step = step.run.pipeline_version.spec["steps"].get(step.name, {})
        step.waiting = len(_upstream(spec_step) - done[step.run_id])
        step.runtime = (step.key_parts or {}).get("runtime") or ""
        step.save(update_fields=["waiting", "runtime"])


class Migration(migrations.Migration):
    dependencies = [
        ("pipelines_app", "0004_workbench_origin"),
        ("runs_app", "0007_run_tags_and_note"),
        ("workspaces", "0003_api_tokens"),
    ]

    operations = [
        migrations.AddField(
            model_name="steprun",
            name="runtime",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="steprun",
            name="waiting",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddIndex(
            model_name="steprun",
            index=models.Index(fields=["run", "status", "waiting"], name="step_run_status_idx"),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
