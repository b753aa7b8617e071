"""Content types (and so permissions and admin log entries) follow the model that moved.

On a database made before the move, Artifact is registered under runs_app; relabel it. On a
new database there is nothing to relabel yet.
"""

from django.db import migrations


def relabel(source, target):
    def move(apps, schema_editor):
        content_types = apps.get_model("contenttypes", "ContentType")
        if not content_types.objects.filter(app_label=target, model="artifact").exists():
            content_types.objects.filter(app_label=source, model="artifact").update(
                app_label=target
            )

    return move


class Migration(migrations.Migration):
    dependencies = [
        ("artifacts", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(relabel("runs_app", "artifacts"), relabel("artifacts", "runs_app"))
    ]
