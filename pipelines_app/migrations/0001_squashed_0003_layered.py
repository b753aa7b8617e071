"""The design-time schema, on top of workspaces and artifacts only.

The migrations it replaces depended on runs_app and runs_app on them (a cycle); a database
made at their head has exactly this schema, so `replaces` marks it applied there."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    replaces = [
        ("pipelines_app", "0001_initial"),
        ("pipelines_app", "0002_initial"),
        ("pipelines_app", "0003_pipeline_version_origin"),
    ]

    dependencies = [
        ("artifacts", "0001_initial"),
        ("workspaces", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Dataset",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.SlugField(max_length=100)),
                ("description", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="datasets",
                        to="workspaces.workspace",
                    ),
                ),
            ],
            options={
                "ordering": ["name"],
            },
        ),
        migrations.CreateModel(
            name="DatasetVersion",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("number", models.PositiveIntegerField()),
                ("message", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "artifact",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="dataset_versions",
                        to="artifacts.artifact",
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
                    "dataset",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="versions",
                        to="pipelines_app.dataset",
                    ),
                ),
            ],
            options={
                "ordering": ["dataset", "-number"],
            },
        ),
        migrations.CreateModel(
            name="Module",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.SlugField(max_length=100)),
                ("description", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
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
                        related_name="modules",
                        to="workspaces.workspace",
                    ),
                ),
            ],
            options={
                "ordering": ["name"],
            },
        ),
        migrations.CreateModel(
            name="ModuleVersion",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("number", models.PositiveIntegerField()),
                ("message", models.TextField(blank=True)),
                ("entrypoint", models.CharField(max_length=300)),
                ("files", models.JSONField()),
                ("code_digest", models.CharField(max_length=64)),
                ("interface", models.JSONField()),
                (
                    "interface_source",
                    models.CharField(
                        choices=[
                            ("inferred", "Read from the code"),
                            ("explicit", "Given explicitly"),
                        ],
                        default="inferred",
                        max_length=10,
                    ),
                ),
                ("imports", models.JSONField(default=list)),
                ("warnings", models.JSONField(default=list)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
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
                    "module",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="versions",
                        to="pipelines_app.module",
                    ),
                ),
                (
                    "parent",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="children",
                        to="pipelines_app.moduleversion",
                    ),
                ),
            ],
            options={
                "ordering": ["module", "-number"],
            },
        ),
        migrations.CreateModel(
            name="Pipeline",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.SlugField(max_length=100)),
                ("description", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
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
                        related_name="pipelines",
                        to="workspaces.workspace",
                    ),
                ),
            ],
            options={
                "ordering": ["name"],
            },
        ),
        migrations.CreateModel(
            name="PipelineVersion",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("number", models.PositiveIntegerField()),
                ("message", models.TextField(blank=True)),
                ("source", models.TextField(blank=True)),
                ("spec", models.JSONField()),
                ("digest", models.CharField(max_length=64)),
                (
                    "origin",
                    models.CharField(
                        choices=[
                            ("user", "Pushed, cloned or promoted by a person"),
                            ("sweep", "Made by a sweep for a variant"),
                        ],
                        default="user",
                        max_length=10,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
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
                    "parent",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="children",
                        to="pipelines_app.pipelineversion",
                    ),
                ),
                (
                    "pipeline",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="versions",
                        to="pipelines_app.pipeline",
                    ),
                ),
            ],
            options={
                "ordering": ["pipeline", "-number"],
            },
        ),
        migrations.CreateModel(
            name="PipelineStep",
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
                ("inputs", models.JSONField(default=dict)),
                (
                    "module_version",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="pipeline_steps",
                        to="pipelines_app.moduleversion",
                    ),
                ),
                (
                    "pipeline_version",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="steps",
                        to="pipelines_app.pipelineversion",
                    ),
                ),
            ],
            options={
                "ordering": ["pipeline_version", "position"],
            },
        ),
        migrations.AddConstraint(
            model_name="dataset",
            constraint=models.UniqueConstraint(
                fields=("workspace", "name"), name="dataset_name_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="datasetversion",
            constraint=models.UniqueConstraint(
                fields=("dataset", "number"), name="dataset_version_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="datasetversion",
            constraint=models.CheckConstraint(
                condition=models.Q(("number__gte", 1)), name="dataset_version_positive"
            ),
        ),
        migrations.AddConstraint(
            model_name="module",
            constraint=models.UniqueConstraint(
                fields=("workspace", "name"), name="module_name_unique"
            ),
        ),
        migrations.AddIndex(
            model_name="moduleversion",
            index=models.Index(fields=["code_digest"], name="module_version_digest_idx"),
        ),
        migrations.AddConstraint(
            model_name="moduleversion",
            constraint=models.UniqueConstraint(
                fields=("module", "number"), name="module_version_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="moduleversion",
            constraint=models.CheckConstraint(
                condition=models.Q(("number__gte", 1)), name="module_version_positive"
            ),
        ),
        migrations.AddConstraint(
            model_name="pipeline",
            constraint=models.UniqueConstraint(
                fields=("workspace", "name"), name="pipeline_name_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="pipelineversion",
            constraint=models.UniqueConstraint(
                fields=("pipeline", "number"), name="pipeline_version_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="pipelineversion",
            constraint=models.CheckConstraint(
                condition=models.Q(("number__gte", 1)), name="pipeline_version_positive"
            ),
        ),
        migrations.AddConstraint(
            model_name="pipelinestep",
            constraint=models.UniqueConstraint(
                fields=("pipeline_version", "name"), name="pipeline_step_name_unique"
            ),
        ),
    ]
