"""The run-time schema, on top of workspaces, artifacts and pipelines_app.

A database made at the head of the migrations it replaces has exactly this schema, so
`replaces` marks it applied there."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    replaces = [
        ("runs_app", "0001_initial"),
        ("runs_app", "0002_sweep_canceled_at_sweep_reuse_sweepevent"),
    ]

    dependencies = [
        ("artifacts", "0001_initial"),
        ("pipelines_app", "0001_squashed_0003_layered"),
        ("workspaces", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="PipelineRun",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("running", "Running"),
                            ("succeeded", "Succeeded"),
                            ("failed", "Failed"),
                            ("canceled", "Canceled"),
                        ],
                        default="pending",
                        max_length=10,
                    ),
                ),
                ("param_overrides", models.JSONField(blank=True, default=dict)),
                ("reuse", models.BooleanField(default=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "failure_reason",
                    models.CharField(
                        blank=True,
                        choices=[
                            ("user_error", "The step's code raised"),
                            ("timeout", "Time limit exceeded"),
                            ("worker_lost", "The worker was lost"),
                            ("worker_lost_repeatedly", "The worker was lost on every attempt"),
                            ("process_died", "The step's process died"),
                            ("output_invalid", "Undeclared, missing or unserialisable output"),
                            ("storage_full", "Storage full"),
                            ("dependency_failed", "An upstream step failed"),
                            ("runtime_mismatch", "No worker has this step's runtime"),
                            ("internal_error", "Internal error"),
                        ],
                        max_length=30,
                    ),
                ),
                ("cancel_requested", models.BooleanField(default=False)),
                ("variant", models.JSONField(blank=True, default=dict)),
                (
                    "cloned_from",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="clones",
                        to="runs_app.pipelinerun",
                    ),
                ),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "pipeline_version",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="runs",
                        to="pipelines_app.pipelineversion",
                    ),
                ),
                (
                    "rerun_of",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="reruns",
                        to="runs_app.pipelinerun",
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="runs",
                        to="workspaces.workspace",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="StepRun",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=100)),
                ("position", models.PositiveIntegerField()),
                ("params", models.JSONField(default=dict)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("queued", "Queued"),
                            ("running", "Running"),
                            ("following", "Following an identical step"),
                            ("succeeded", "Succeeded"),
                            ("reused", "Reused"),
                            ("failed", "Failed"),
                            ("canceled", "Canceled"),
                        ],
                        default="pending",
                        max_length=10,
                    ),
                ),
                ("reuse_allowed", models.BooleanField(default=True)),
                ("attempt", models.PositiveIntegerField(default=0)),
                ("max_attempts", models.PositiveIntegerField(default=3)),
                ("timeout_s", models.FloatField(default=3600.0)),
                ("cache_key", models.CharField(blank=True, max_length=64)),
                ("key_parts", models.JSONField(blank=True, default=dict)),
                (
                    "failure_reason",
                    models.CharField(
                        blank=True,
                        choices=[
                            ("user_error", "The step's code raised"),
                            ("timeout", "Time limit exceeded"),
                            ("worker_lost", "The worker was lost"),
                            ("worker_lost_repeatedly", "The worker was lost on every attempt"),
                            ("process_died", "The step's process died"),
                            ("output_invalid", "Undeclared, missing or unserialisable output"),
                            ("storage_full", "Storage full"),
                            ("dependency_failed", "An upstream step failed"),
                            ("runtime_mismatch", "No worker has this step's runtime"),
                            ("internal_error", "Internal error"),
                        ],
                        max_length=30,
                    ),
                ),
                ("failure_message", models.TextField(blank=True)),
                ("worker", models.CharField(blank=True, max_length=200)),
                ("queued_at", models.DateTimeField(blank=True, null=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("lease_expires_at", models.DateTimeField(blank=True, null=True)),
                ("cancel_requested", models.BooleanField(default=False)),
                (
                    "following",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="followers",
                        to="runs_app.steprun",
                    ),
                ),
                (
                    "module_version",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="step_runs",
                        to="pipelines_app.moduleversion",
                    ),
                ),
                (
                    "reused_from",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="reused_by",
                        to="runs_app.steprun",
                    ),
                ),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="steps",
                        to="runs_app.pipelinerun",
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="workspaces.workspace",
                    ),
                ),
            ],
            options={
                "ordering": ["run", "position"],
            },
        ),
        migrations.CreateModel(
            name="StepOutput",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=100)),
                (
                    "artifact",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="producers",
                        to="artifacts.artifact",
                    ),
                ),
                (
                    "step",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="outputs",
                        to="runs_app.steprun",
                    ),
                ),
            ],
            options={
                "ordering": ["step", "name"],
            },
        ),
        migrations.CreateModel(
            name="StepLog",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("attempt", models.PositiveIntegerField()),
                ("offset", models.BigIntegerField()),
                ("text", models.TextField()),
                (
                    "step",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="logs",
                        to="runs_app.steprun",
                    ),
                ),
            ],
            options={
                "ordering": ["step", "attempt", "offset"],
            },
        ),
        migrations.CreateModel(
            name="StepInput",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=100)),
                (
                    "artifact",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="consumers",
                        to="artifacts.artifact",
                    ),
                ),
                (
                    "step",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="inputs",
                        to="runs_app.steprun",
                    ),
                ),
            ],
            options={
                "ordering": ["step", "name"],
            },
        ),
        migrations.CreateModel(
            name="Metric",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200)),
                ("value", models.FloatField()),
                ("index", models.IntegerField(blank=True, null=True)),
                ("at", models.DateTimeField(auto_now_add=True)),
                (
                    "step",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="metrics",
                        to="runs_app.steprun",
                    ),
                ),
            ],
            options={
                "ordering": ["step", "name", "index", "id"],
            },
        ),
        migrations.CreateModel(
            name="Event",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("old_status", models.CharField(blank=True, max_length=10)),
                ("new_status", models.CharField(max_length=10)),
                ("reason", models.CharField(blank=True, max_length=30)),
                ("message", models.TextField(blank=True)),
                ("attempt", models.PositiveIntegerField(default=0)),
                ("at", models.DateTimeField(auto_now_add=True)),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="runs_app.pipelinerun",
                    ),
                ),
                (
                    "step",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="runs_app.steprun",
                    ),
                ),
            ],
            options={
                "ordering": ["at", "id"],
            },
        ),
        migrations.CreateModel(
            name="Sweep",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200)),
                ("axes", models.JSONField(default=dict)),
                ("replicates", models.PositiveIntegerField(default=1)),
                ("seed_params", models.JSONField(default=list)),
                ("reuse", models.BooleanField(default=True)),
                ("canceled_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "base_version",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="sweeps",
                        to="pipelines_app.pipelineversion",
                    ),
                ),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="sweeps",
                        to="workspaces.workspace",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at"],
            },
        ),
        migrations.AddField(
            model_name="pipelinerun",
            name="sweep",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="runs",
                to="runs_app.sweep",
            ),
        ),
        migrations.CreateModel(
            name="SweepEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("created", "Created"),
                            ("extended", "Variant added"),
                            ("canceled", "Canceled"),
                            ("promoted", "Variant promoted"),
                        ],
                        max_length=10,
                    ),
                ),
                ("data", models.JSONField(blank=True, default=dict)),
                ("at", models.DateTimeField(auto_now_add=True)),
                (
                    "by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "sweep",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="runs_app.sweep",
                    ),
                ),
            ],
            options={
                "ordering": ["at", "id"],
            },
        ),
        migrations.CreateModel(
            name="WorkerHeartbeat",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("host", models.CharField(max_length=200)),
                ("pid", models.IntegerField()),
                ("runtime", models.CharField(max_length=64)),
                ("started_at", models.DateTimeField(auto_now_add=True)),
                ("last_seen", models.DateTimeField()),
            ],
            options={
                "indexes": [models.Index(fields=["last_seen"], name="worker_seen_idx")],
                "constraints": [
                    models.UniqueConstraint(fields=("host", "pid"), name="worker_unique")
                ],
            },
        ),
        migrations.AddIndex(
            model_name="steprun",
            index=models.Index(fields=["workspace", "cache_key", "status"], name="step_key_idx"),
        ),
        migrations.AddIndex(
            model_name="steprun",
            index=models.Index(fields=["status", "lease_expires_at"], name="step_reaper_idx"),
        ),
        migrations.AddConstraint(
            model_name="steprun",
            constraint=models.UniqueConstraint(
                fields=("run", "name"), name="step_name_unique_in_run"
            ),
        ),
        migrations.AddConstraint(
            model_name="steprun",
            constraint=models.UniqueConstraint(
                condition=models.Q(("reuse_allowed", True), ("status__in", ["queued", "running"])),
                fields=("workspace", "cache_key"),
                name="one_leader_per_cache_key",
            ),
        ),
        migrations.AddConstraint(
            model_name="steprun",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "status__in",
                        [
                            "pending",
                            "queued",
                            "running",
                            "following",
                            "succeeded",
                            "reused",
                            "failed",
                            "canceled",
                        ],
                    )
                ),
                name="step_status_valid",
            ),
        ),
        migrations.AddConstraint(
            model_name="steprun",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status", "failed"), models.Q(("failure_reason", ""), _negated=True)),
                    models.Q(models.Q(("status", "failed"), _negated=True), ("failure_reason", "")),
                    _connector="OR",
                ),
                name="step_reason_iff_failed",
            ),
        ),
        migrations.AddConstraint(
            model_name="steprun",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status", "following"), _negated=True),
                    ("following__isnull", False),
                    _connector="OR",
                ),
                name="step_following_has_leader",
            ),
        ),
        migrations.AddConstraint(
            model_name="steprun",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status", "reused"), _negated=True),
                    ("reused_from__isnull", False),
                    _connector="OR",
                ),
                name="step_reused_has_source",
            ),
        ),
        migrations.AddConstraint(
            model_name="steprun",
            constraint=models.CheckConstraint(
                condition=models.Q(("max_attempts__gte", 1)), name="step_max_attempts"
            ),
        ),
        migrations.AddConstraint(
            model_name="stepoutput",
            constraint=models.UniqueConstraint(fields=("step", "name"), name="step_output_unique"),
        ),
        migrations.AddConstraint(
            model_name="steplog",
            constraint=models.UniqueConstraint(
                fields=("step", "attempt", "offset"), name="step_log_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="stepinput",
            constraint=models.UniqueConstraint(fields=("step", "name"), name="step_input_unique"),
        ),
        migrations.AddIndex(
            model_name="metric",
            index=models.Index(fields=["name", "step"], name="metric_name_idx"),
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["run", "at"], name="event_run_idx"),
        ),
        migrations.AddIndex(
            model_name="sweep",
            index=models.Index(fields=["workspace", "-created_at"], name="sweep_recent_idx"),
        ),
        migrations.AddConstraint(
            model_name="sweep",
            constraint=models.CheckConstraint(
                condition=models.Q(("replicates__gte", 1)), name="sweep_replicates_positive"
            ),
        ),
        migrations.AddIndex(
            model_name="pipelinerun",
            index=models.Index(fields=["workspace", "-created_at"], name="run_recent_idx"),
        ),
        migrations.AddIndex(
            model_name="pipelinerun",
            index=models.Index(fields=["workspace", "status"], name="run_status_idx"),
        ),
        migrations.AddConstraint(
            model_name="pipelinerun",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("status__in", ["pending", "running", "succeeded", "failed", "canceled"])
                ),
                name="run_status_valid",
            ),
        ),
        migrations.AddConstraint(
            model_name="pipelinerun",
            constraint=models.CheckConstraint(
                condition=models.Q(("failure_reason", ""), ("status", "failed"), _connector="OR"),
                name="run_reason_only_when_failed",
            ),
        ),
        migrations.AddIndex(
            model_name="sweepevent",
            index=models.Index(fields=["sweep", "at"], name="sweep_event_idx"),
        ),
        migrations.AddConstraint(
            model_name="sweepevent",
            constraint=models.CheckConstraint(
                condition=models.Q(("kind__in", ["created", "extended", "canceled", "promoted"])),
                name="sweep_event_kind_valid",
            ),
        ),
    ]
