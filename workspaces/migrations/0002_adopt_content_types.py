"""Content types (and so permissions and admin log entries) follow the models that moved.

On a database made before the move, Workspace and Membership are registered under
pipelines_app; relabel them. On a new database there is nothing to relabel yet.
"""

from django.db import migrations

MOVED = {"workspace", "membership"}


def adopt(apps, schema_editor):
    content_types = apps.get_model("contenttypes", "ContentType")
    taken = set(
        content_types.objects.filter(app_label="workspaces").values_list("model", flat=True)
    )
    content_types.objects.filter(app_label="pipelines_app", model__in=MOVED - taken).update(
        app_label="workspaces"
    )


def give_back(apps, schema_editor):
    content_types = apps.get_model("contenttypes", "ContentType")
    content_types.objects.filter(app_label="workspaces", model__in=MOVED).update(
        app_label="pipelines_app"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("workspaces", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(adopt, give_back)]
