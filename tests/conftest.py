"""Test-session setup: offline, `ci` budget, and the solution notebooks nbval runs.

The solution notebooks are generated from `solutions/` into tests/_build/ at session start,
so nbval (enabled by --nbval-lax in pyproject's addopts) runs exactly what the sources say.
"""

import os
from pathlib import Path

os.environ.setdefault("SAE_COURSE_BUDGET", "ci")
os.environ.setdefault("SAE_COURSE_MODEL", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

BUILD_DIR = Path(__file__).parent / "_build"


def pytest_sessionstart(session):
    from sae_course.notebook_build import build_all

    build_all(BUILD_DIR, learner=False)
