"""Artifact, moved here from runs_app (its table kept its name, runs_app_artifact).

A database made before the move already has the table: `replaces` marks this migration
applied there, so nothing is created again."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    replaces = [("runs_app", "0001_initial")]

    dependencies = [
        ("workspaces", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Artifact",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("sha256", models.CharField(max_length=64)),
                ("size", models.BigIntegerField()),
                ("media_type", models.CharField(max_length=100)),
                (
                    "kind",
                    models.CharField(
                        choices=[("file", "File"), ("directory", "Directory")],
                        default="file",
                        max_length=10,
                    ),
                ),
                ("storage_name", models.CharField(max_length=300)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="artifacts",
                        to="workspaces.workspace",
                    ),
                ),
            ],
            options={
                "db_table": "runs_app_artifact",
                "ordering": ["-created_at"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("workspace", "sha256", "media_type", "kind"), name="artifact_unique"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("size__gte", 0)), name="artifact_size_nonnegative"
                    ),
                ],
            },
        ),
    ]
