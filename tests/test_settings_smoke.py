from pathlib import Path

from django.core.files.storage import storages

from artifacts.store import artifact_store_bytes


def test_artifacts_are_content_addressed_and_stored_once(world, tmp_path):
    first = artifact_store_bytes(world.workspace, b"hello", "text/plain")
    again = artifact_store_bytes(world.workspace, b"hello", "text/plain")
    elsewhere = artifact_store_bytes(world.other_workspace, b"hello", "text/plain")

    assert first.pk == again.pk
    assert elsewhere.pk != first.pk and elsewhere.storage_name == first.storage_name
    assert first.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert storages["artifacts"].location.startswith(str(tmp_path.parent))  # this test's
    with storages["artifacts"].open(first.storage_name) as handle:
        assert handle.read() == b"hello"
    leftovers = [
        p for p in Path(storages["artifacts"].location).rglob("*") if p.name.startswith(".tmp-")
    ]
    assert leftovers == []
