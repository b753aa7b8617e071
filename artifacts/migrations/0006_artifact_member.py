"""A directory artifact's files, linked to it so the collector keeps them while it is kept.

Directories stored before this migration get their links from their manifests: without them
the collector took their files an hour after they were stored (the grace), leaving the
directory's manifest naming bytes that were gone.
"""

import json

import django.db.models.deletion
from django.core.files.storage import storages
from django.db import migrations, models

MANIFEST_MAX_BYTES = 16 * 1024 * 1024


def link_stored_directories(apps, schema_editor):
    Artifact = apps.get_model("artifacts", "Artifact")
    ArtifactMember = apps.get_model("artifacts", "ArtifactMember")
    storage = storages["artifacts"]
    for directory in Artifact.objects.filter(kind="directory").iterator():
        try:
            with storage.open(directory.storage_name, "rb") as handle:
                data = handle.read(MANIFEST_MAX_BYTES + 1)
            digests = {str(f["sha256"]) for f in json.loads(data)["files"]}
        except (OSError, ValueError, KeyError, TypeError):
            continue  # its bytes are gone or unreadable: nothing to keep
        members = Artifact.objects.filter(
            workspace_id=directory.workspace_id, sha256__in=digests, kind="file"
        ).values_list("pk", flat=True)
        ArtifactMember.objects.bulk_create(
            (ArtifactMember(directory_id=directory.pk, member_id=pk) for pk in members),
            ignore_conflicts=True,
        )


class Migration(migrations.Migration):

    dependencies = [
        ("artifacts", "0005_deleted_artifact"),
    ]

    operations = [
        migrations.CreateModel(
            name="ArtifactMember",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("directory", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="artifacts.artifact")),
                ("member", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="+", to="artifacts.artifact")),
            ],
            options={
                "db_table": "artifacts_artifact_member",
                "indexes": [models.Index(fields=["member"], name="artifact_member_member_idx")],
                "constraints": [models.UniqueConstraint(fields=("directory", "member"), name="artifact_member_unique")],
            },
        ),
        migrations.RunPython(link_stored_directories, migrations.RunPython.noop),
    ]
