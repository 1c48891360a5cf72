"""Every widget of the course has a browser check (tests/browser/widget_checks.py) that runs."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import ModuleType

from sae_course.notebook_build import read_source, source_paths
from tests.browser.widget_checks import NOT_WIDGETS, WIDGET_CHECKS, WIDGET_MODULES


def widget_modules() -> list[ModuleType]:
    """The modules of WIDGET_MODULES, and each of their modules once one is a package."""
    found = []
    for name in WIDGET_MODULES:
        package = importlib.import_module(name)
        found.append(package)
        if hasattr(package, "__path__"):
            found += [importlib.import_module(m.name)
                      for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
    return found


def widget_classes() -> set[str]:
    """The public classes defined in the widgets module(s)."""
    return {name for module in widget_modules()
            for name, obj in vars(module).items()
            if inspect.isclass(obj) and obj.__module__ == module.__name__
            and not name.startswith("_")}


def test_every_widget_class_has_a_browser_check():
    missing = widget_classes() - WIDGET_CHECKS.keys() - NOT_WIDGETS.keys()
    assert not missing, (
        f"widget classes without a browser check: {sorted(missing)}. Add each to WIDGET_CHECKS "
        "in tests/browser/widget_checks.py (the cell that shows it and the moves that must "
        "redraw it), or, if it is no widget, to NOT_WIDGETS with the reason."
    )


def test_every_browser_check_names_a_widget_class():
    assert set(WIDGET_CHECKS) | set(NOT_WIDGETS) <= widget_classes()


def test_every_browser_check_finds_a_cell_that_shows_its_widget():
    cells = [c.source for src in source_paths() for c in read_source(src).cells
             if c.cell_type == "code"]
    for name, check in WIDGET_CHECKS.items():
        assert any(re.search(check.shown_by, cell) for cell in cells), (
            f"no notebook cell matches {check.shown_by!r}, so the browser test never sees {name}"
        )


def test_every_browser_check_moves_its_widget_or_watches_it_live():
    for name, check in WIDGET_CHECKS.items():
        assert check.moves or check.live, f"{name}'s browser check neither moves nor watches it"
