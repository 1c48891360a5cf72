"""Print the pip arguments that install the right build of torch here (scripts/setup.sh uses it).

On Linux without an NVIDIA GPU (no `nvidia-smi`), the CUDA build of torch is gigabytes of
libraries nothing will use. If the configured package index would serve that build (as PyPI
does on Linux), this prints PyTorch's CPU index; where the index already serves a CPU build
(a `+cpu` wheel, or one that needs no NVIDIA packages), and on macOS or with a GPU, it prints
nothing and pip is left as configured.

    python scripts/torch_index.py torch==2.13.0
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CPU_INDEX = ["--index-url", "https://download.pytorch.org/whl/cpu"]


@dataclass(frozen=True)
class Wheel:
    """What pip would install for torch: its version and the requirements it declares."""

    version: str
    requires: tuple[str, ...] = ()

    @property
    def is_cuda(self) -> bool:
        """A CUDA build: a `+cu...` local version, or NVIDIA's CUDA packages as requirements."""
        local = self.version.partition("+")[2]
        return local.startswith("cu") or any(r.lower().startswith("nvidia-") for r in self.requires)


def index_args(system: str, has_nvidia_gpu: bool, wheel: Wheel | None) -> list[str]:
    """The extra pip arguments for installing torch: PyTorch's CPU index only on Linux without
    an NVIDIA GPU when the configured index would serve the CUDA build; else none."""
    if system != "Linux" or has_nvidia_gpu or wheel is None:
        return []
    return CPU_INDEX if wheel.is_cuda else []


def resolve(requirement: str) -> Wheel | None:
    """What `pip install requirement` would install, asked of pip without installing it
    (None when pip cannot tell; the install that follows then reports why)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--quiet",
             "--ignore-installed", "--report", str(report), requirement],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0 or not report.exists():
            return None
        installs = json.loads(report.read_text()).get("install", [])
    if not installs:
        return None
    metadata = installs[0]["metadata"]
    return Wheel(metadata["version"], tuple(metadata.get("requires_dist", [])))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    system = platform.system()
    gpu = shutil.which("nvidia-smi") is not None
    wheel = resolve(argv[0]) if system == "Linux" and not gpu else None
    print(" ".join(index_args(system, gpu, wheel)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
