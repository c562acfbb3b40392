"""Repository folders: model names, duplicates across repositories, version folders, change fingerprints."""

import os

import pytest

from modelgate.core.errors import InvalidArgumentError, NotFoundError
from modelgate.core.version_policy import version_numbers
from modelgate.server.repository.layout import RepositoryLayout, check_model_name, fingerprint


@pytest.mark.parametrize("name", ["add_sub", "m", "Model-2", "v1.2", "_private", "9lives", "a.b-c_d"])
def test_plain_names_are_allowed_and_found(name, tmp_path):
    check_model_name(name)  # raises InvalidArgumentError for a refused name
    model_dir = _model(tmp_path, name)
    assert RepositoryLayout([tmp_path]).locate(name).path == model_dir.resolve()  # and the scan agrees


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../x",
        "x/..",
        "a/b",
        "/etc/passwd",
        "a\\b",
        "..\\x",
        "a..b",
        ".hidden",
        "-flag",
        "add_sub\n",  # a trailing newline must not slip through `$`
        "a\nb",
        "a b",
        "a%2Fb",
        "a\x00b",
        "modèle",
    ],
)
def test_names_that_could_leave_the_repository_or_are_odd_are_refused(name):
    with pytest.raises(InvalidArgumentError) as raised:
        check_model_name(name)
    assert "invalid model name" in raised.value.message
    assert raised.value.http_status == 400


def _model(root, name):
    (root / name / "1").mkdir(parents=True)
    return root / name


def test_scan_finds_model_folders_and_skips_hidden_and_invalid_ones(tmp_path):
    for name in ("b", "a", ".git", "bad name", "x..y"):
        _model(tmp_path, name)
    (tmp_path / "README.md").write_text("not a model")
    models, duplicated = RepositoryLayout([tmp_path]).scan()
    assert sorted(models) == ["a", "b"]
    assert duplicated == {}
    assert models["a"].path == (tmp_path / "a").resolve()
    assert models["a"].root == tmp_path.resolve()


def test_a_name_in_two_repositories_is_reported_not_served(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    for root in (first, second):
        _model(root, "shared")
    _model(first, "only_one")
    _model(second, "only_two")
    layout = RepositoryLayout([first, second])
    models, duplicated = layout.scan()
    assert sorted(models) == ["only_one", "only_two"]
    assert list(duplicated) == ["shared"]
    assert str(first.resolve()) in duplicated["shared"] and str(second.resolve()) in duplicated["shared"]
    with pytest.raises(InvalidArgumentError) as raised:
        layout.locate("shared")
    assert "more than one repository" in raised.value.message
    assert layout.locate("only_two").root == second.resolve()


def test_locate_an_unknown_model_is_not_found(tmp_path):
    with pytest.raises(NotFoundError):
        RepositoryLayout([tmp_path]).locate("missing")


def test_locate_checks_the_name_before_touching_the_disk(tmp_path):
    repository = tmp_path / "repository"
    repository.mkdir()
    _model(tmp_path, "outside")
    with pytest.raises(InvalidArgumentError):
        RepositoryLayout([repository]).locate("../outside")


def test_a_model_folder_linking_outside_the_repository_is_refused(tmp_path):
    repository = tmp_path / "repository"
    repository.mkdir()
    outside = _model(tmp_path, "outside")
    (repository / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidArgumentError) as raised:
        RepositoryLayout([repository]).locate("linked")
    assert "outside the model repository" in raised.value.message


def test_a_missing_repository_folder_has_no_models(tmp_path):
    assert RepositoryLayout([tmp_path / "nope"]).scan() == ({}, {})


def test_version_numbers_are_numeric_folders_in_numeric_order(tmp_path):
    for folder in ("10", "2", "1", "0", "latest", "1a", "v3", "-4", "01", "²", "٣", "1 ", ".5"):
        (tmp_path / folder).mkdir()
    (tmp_path / "7").write_text("a file, not a version folder")
    assert version_numbers(tmp_path) == [0, 1, 2, 10]


def test_fingerprint_follows_files_but_not_pycache(tmp_path):
    model = _model(tmp_path, "m")
    (model / "config.pbtxt").write_text('name: "m"')
    (model / "1" / "model.py").write_text("x = 1")
    first = fingerprint(model)
    assert fingerprint(model) == first

    (model / "1" / "__pycache__").mkdir()
    (model / "1" / "__pycache__" / "model.cpython.pyc").write_bytes(b"\0")
    assert fingerprint(model) == first

    (model / "config.pbtxt").write_text('name: "m" ')  # size changes
    second = fingerprint(model)
    assert second != first

    stat = (model / "config.pbtxt").stat()
    os.utime(model / "config.pbtxt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # only mtime changes
    third = fingerprint(model)
    assert third != second

    (model / "2").mkdir()
    (model / "2" / "model.py").write_text("x = 1")  # a new version folder
    assert fingerprint(model) != third


def test_fingerprint_of_a_missing_folder_is_stable(tmp_path):
    assert fingerprint(tmp_path / "gone") == fingerprint(tmp_path / "also_gone")
