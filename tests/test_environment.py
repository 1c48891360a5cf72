"""The install files agree: one lock, the same pins in environment.yml, torch pinned to CPU."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)$")


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("-e"):
            continue
        match = PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def lock_pins() -> dict[str, str]:
    return _pins((ROOT / "requirements.lock").read_text().splitlines())


def environment_pins() -> dict[str, str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("  - pip:")
    return _pins([line.strip().removeprefix("- ") for line in lines[start + 1:]])


def test_environment_yml_lists_the_lock_pins():
    assert environment_pins() == lock_pins()


def test_torch_is_pinned_to_the_cpu_release():
    assert lock_pins()["torch"] == "2.13.0"


def test_every_direct_dependency_is_locked():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = project["dependencies"] + project["optional-dependencies"]["dev"]
    locked = lock_pins()
    for requirement in direct:
        name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in locked, f"{name} is a direct dependency but not in requirements.lock"
    assert locked["transformer-lens"].startswith("4.3.")


def test_setup_installs_torch_pinned_before_the_lock():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    torch_at = setup.index("install --quiet torch==2.13.0")
    assert torch_at < setup.index("-r requirements.lock")


def test_ci_runs_the_readme_test_command_then_the_browser_test():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ("bash scripts/test.sh", "bash scripts/test_browser.sh"):
        assert command in readme and command in ci
    assert ci.index("bash scripts/test.sh") < ci.index("bash scripts/test_browser.sh")
