"""A config that names no backend gets the one its model file tells, as Triton's auto-complete does."""

import pytest

from modelgate.core.config_files import backend_from_model_files, read_model_folder_config
from modelgate.core.errors import ConfigError


def _model(tmp_path, *files: str):
    for relative in files:
        path = tmp_path / "m" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return tmp_path / "m"


@pytest.mark.parametrize(
    "filename, backend, platform",
    [
        ("model.py", "python", ""),
        ("model.pt", "", "pytorch_libtorch"),
        ("model.pt2", "", "torch_export"),
        ("model.onnx", "", "onnxruntime_onnx"),
    ],
)
def test_each_model_file_tells_its_backend(tmp_path, filename, backend, platform):
    inferred = backend_from_model_files(_model(tmp_path, f"3/{filename}"))
    assert (inferred.backend, inferred.platform) == (backend, platform)


def test_model_py_wins_over_a_data_file_beside_it(tmp_path):
    assert backend_from_model_files(_model(tmp_path, "1/model.py", "1/model.onnx")).backend == "python"


def test_default_model_filename_decides_before_the_folder(tmp_path):
    model_dir = _model(tmp_path, "1/model.py", "1/model.pt")
    assert backend_from_model_files(model_dir, "model.pt").platform == "pytorch_libtorch"


def test_nothing_to_tell_is_none_and_a_configless_folder_says_what_it_looked_for(tmp_path):
    model_dir = _model(tmp_path, "1/weights.bin")
    assert backend_from_model_files(model_dir) is None
    with pytest.raises(ConfigError) as raised:
        read_model_folder_config(model_dir)
    assert "<version>/model.pt2" in raised.value.message and "<version>/model.py" in raised.value.message


def test_a_config_file_without_backend_gets_it_from_the_folder(tmp_path):
    model_dir = _model(tmp_path, "1/model.pt2")
    (model_dir / "config.pbtxt").write_text("max_batch_size: 4\n")
    config, _ = read_model_folder_config(model_dir)
    assert (config.platform, config.max_batch_size) == ("torch_export", 4)
