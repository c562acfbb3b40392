"""Files of a load request (`file:<version>/<name>`) become a temporary model folder, safely."""

import tempfile
import uuid
from pathlib import Path

import pytest

from modelgate.core.errors import InvalidArgumentError
from modelgate.server.repository.override_files import remove_override_model_dir, write_override_model_dir


def test_files_form_a_model_folder_named_after_the_model():
    model_dir = write_override_model_dir("m", {"1/model.py": b"code", "2/sub/data.bin": b"\x00\x01", "notes.txt": b""})
    try:
        assert model_dir.name == "m"
        assert (model_dir / "1" / "model.py").read_bytes() == b"code"
        assert (model_dir / "2" / "sub" / "data.bin").read_bytes() == b"\x00\x01"
        assert (model_dir / "notes.txt").read_bytes() == b""
    finally:
        remove_override_model_dir(model_dir)
    assert not model_dir.exists()
    assert not model_dir.parent.exists()


def test_remove_of_none_deletes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where override folders are made
    model_dir = write_override_model_dir("m", {"1/model.py": b"code"})
    remove_override_model_dir(None)  # a model loaded without files has no folder to remove
    assert list(tmp_path.iterdir()) == [model_dir.parent]
    assert (model_dir / "1" / "model.py").read_bytes() == b"code"


def test_remove_twice_deletes_once():
    """An unload after a failed reload may remove the same folder again: the second time finds nothing to do."""
    model_dir = write_override_model_dir("m", {"1/model.py": b"code"})
    remove_override_model_dir(model_dir)
    remove_override_model_dir(model_dir)
    assert not model_dir.parent.exists()


@pytest.mark.parametrize(
    "relative",
    [
        "../{escape}",
        "../../{escape}",
        "1/../../{escape}",
        "..",
        "/tmp/{escape}",
        "1\\..\\..\\{escape}",
        "",
    ],
)
def test_paths_that_leave_the_folder_are_refused_and_nothing_is_written(relative, tmp_path, monkeypatch):
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))  # where mkdtemp would create the folder
    escape = f"modelgate-test-escape-{uuid.uuid4().hex}"
    relative = relative.format(escape=escape)
    with pytest.raises(InvalidArgumentError) as raised:
        write_override_model_dir("m", {"1/model.py": b"fine", relative: b"evil"})
    assert f"'file:{relative}'" in raised.value.message
    assert "without '..'" in raised.value.message
    assert list(private_tmp.iterdir()) == []  # refused before any folder was made
    assert not [p for p in tmp_path.rglob("*") if p.name == escape]
    assert not Path("/tmp", escape).exists()
