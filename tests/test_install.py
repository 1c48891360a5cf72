"""A setup that suits real machines: the torch build setup.sh picks, the files the build writes."""

from __future__ import annotations

import importlib.util
import json
import re
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

import sae_course
from sae_course import files, notebook_build

ROOT = Path(__file__).resolve().parent.parent


def _torch_index() -> ModuleType:
    spec = importlib.util.spec_from_file_location("torch_index", ROOT / "scripts/torch_index.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


ti = _torch_index()
CUDA = ti.Wheel("2.13.0", ("filelock", "nvidia-cuda-runtime-cu12==12.8; sys_platform == 'linux'"))
CPU_LOCAL = ti.Wheel("2.13.0+cpu", ("filelock", "sympy>=1.13.3"))
CPU_PLAIN = ti.Wheel("2.13.0", ("filelock", "sympy>=1.13.3"))


@pytest.mark.parametrize(
    ("system", "gpu", "wheel", "expected"),
    [
        ("Linux", False, CUDA, ti.CPU_INDEX),  # PyPI on Linux: the CUDA build, gigabytes
        ("Linux", False, ti.Wheel("2.13.0+cu128"), ti.CPU_INDEX),
        ("Linux", False, CPU_LOCAL, []),  # the configured index already serves the CPU build
        ("Linux", False, CPU_PLAIN, []),
        ("Linux", True, None, []),  # an NVIDIA GPU: the CUDA build is wanted
        ("Linux", False, None, []),  # pip could not tell: leave pip as configured
        ("Darwin", False, None, []),
    ],
)
def test_cpu_index_only_where_the_configured_one_serves_cuda(system, gpu, wheel, expected):
    assert ti.index_args(system, gpu, wheel) == expected


def test_resolve_reads_what_pip_would_install(monkeypatch):
    def fake_pip(command, **kwargs):
        report = Path(command[command.index("--report") + 1])
        report.write_text(json.dumps({"version": "1", "install": [{"metadata": {
            "name": "torch", "version": "2.13.0", "requires_dist": list(CUDA.requires)}}]}))
        assert "--dry-run" in command and "--no-deps" in command and command[-1] == "torch==2"
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(ti.subprocess, "run", fake_pip)
    assert ti.resolve("torch==2") == CUDA


def test_resolve_is_none_when_pip_fails(monkeypatch):
    monkeypatch.setattr(ti.subprocess, "run",
                        lambda command, **kw: subprocess.CompletedProcess(command, 1, "", "no"))
    assert ti.resolve("torch==2") is None


def test_setup_asks_for_the_torch_index_before_installing_torch():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert setup.index("scripts/torch_index.py torch==2.13.0") < setup.index(
        "install --quiet torch==2.13.0")


def test_built_notebooks_are_readable_by_all_and_carry_the_kernel_metadata(tmp_path):
    for path in notebook_build.build_all(tmp_path, learner=False):
        # the mode open() gives a new file: 0644 under the usual umask 022, never 0600
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~files.UMASK, path.name
        metadata = nbformat.read(path, as_version=4).metadata
        assert metadata == notebook_build.kernel_metadata()


def test_colab_installs_the_tagged_release_of_this_version():
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert sae_course.__version__ == version
    assert notebook_build.COLAB_INSTALL_TARGET.endswith(f"@v{version}")
    assert notebook_build.COLAB_INSTALL_TARGET in notebook_build.COLAB_SETUP_CELL
