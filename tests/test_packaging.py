"""One import name: the package installs as `modelgate` alone and a checkout never shadows other packages.

`python -m pytest` and `python -m modelgate` put the checkout's root first on `sys.path`; its folders
`server/`, `backends/`, `kernels/` and `clients/` must then lose to installed packages of those names (Hugging
Face's `kernels` is one that transformers imports).
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERIC_NAMES = ("server", "backends", "kernels", "clients")


def _python(code_or_args, cwd: Path, env_path: str = "") -> subprocess.CompletedProcess:
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    env = dict(os.environ, PYTHONPATH=env_path) if env_path else dict(os.environ)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("where", ["repository root", "elsewhere"])
def test_installed_packages_with_our_folder_names_win_over_the_checkout(where, tmp_path):
    site = tmp_path / "site"
    for name in GENERIC_NAMES:
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("IS_THE_INSTALLED_ONE = True\n")
    cwd = ROOT if where == "repository root" else tmp_path
    code = (
        "import backends, clients, kernels, server, modelgate.kernels.fp8_quant\n"
        "print(all(m.IS_THE_INSTALLED_ONE for m in (backends, clients, kernels, server)))"
    )
    # The checkout ('' or cwd) comes first on sys.path, the installed packages after it, as with site-packages.
    result = _python(code, cwd, env_path=str(site))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]


def test_hugging_face_kernels_and_ours_import_together_from_the_root():
    result = _python("import kernels, modelgate.kernels.fp8_gemm; print(callable(kernels.get_kernel))", ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]


@pytest.mark.parametrize("where", ["repository root", "elsewhere"])
def test_python_dash_m_modelgate_is_the_command(where, tmp_path):
    result = _python(["-m", "modelgate", "--help"], ROOT if where == "repository root" else tmp_path)
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout and "bench" in result.stdout and "size" in result.stdout


def test_the_wheel_installs_modelgate_and_nothing_else(tmp_path):
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("modelgate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert archive.read(top_level).decode().split() == ["modelgate"]
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"modelgate"}
    for module in (
        "server/runtime.py",
        "backends/base.py",
        "kernels/fp8_gemm.py",
        "clients/bench/cli.py",
        "clients/tune/cli.py",
        "core/errors.py",
        "__main__.py",
    ):
        assert f"modelgate/{module}" in names
