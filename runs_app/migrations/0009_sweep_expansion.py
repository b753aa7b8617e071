"""A sweep's runs are started by an expander that may run twice at once (the request, then
an actor, and the reaper's resend): each run records its combination as a digest, unique in
its sweep. Existing sweeps are marked expanded (their runs were all started in the request
that made them) and their runs get their digests."""

import hashlib
import json
from typing import Any

from django.db import migrations, models
from django.db.models import Q

REPLICATE_KEY = "replicate"  # runs_app.sweeps.plan.REPLICATE_KEY


def _variant_key(variant: dict[str, Any]) -> str:
    # runs_app.sweeps.plan.variant_key, as it is when this migration was written.
    choices = sorted((k, str(v)) for k, v in variant.items() if k != REPLICATE_KEY)
    replicate = int(variant.get(REPLICATE_KEY, 0))
    text = json.dumps([choices, replicate], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def backfill(apps: Any, schema_editor: Any) -> None:
    Sweep = apps.get_model("runs_app", "Sweep")
    PipelineRun = apps.get_model("runs_app", "PipelineRun")
    for sweep in Sweep.objects.all().iterator():
        sweep.expanded_at = sweep.created_at
        sweep.save(update_fields=["expanded_at"])
        seen: set[str] = set()
        for run in PipelineRun.objects.filter(sweep=sweep).order_by("pk").iterator():
            key = _variant_key(run.variant or {})
            if key in seen:
                continue  # a duplicate (none is expected): left without a key
            seen.add(key)
            run.variant_key = key
            run.save(update_fields=["variant_key"])


class Migration(migrations.Migration):
    dependencies = [
        ("runs_app", "0008_engine_counts"),
    ]

    operations = [
        migrations.AddField(
            model_name="pipelinerun",
            name="variant_key",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="sweep",
            name="expanded_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="sweep",
            name="expanding_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="pipelinerun",
            constraint=models.UniqueConstraint(
                condition=Q(sweep__isnull=False) & ~Q(variant_key=""),
                fields=("sweep", "variant_key"),
                name="run_one_per_sweep_combination",
            ),
        ),
    ]
