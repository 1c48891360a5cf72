"""Every notebook run in JupyterLab in headless Chromium, as a learner would run it.

Run by scripts/test_browser.sh (not by the default `pytest`, see tests/browser/__init__.py).
Each solution notebook the build writes to tests/_build/ is opened (it must not be marked
modified), run from the Run menu, and must show no error, every widget drawn (no "Error
displaying widget", no "Loading widget...", no plain-text repr), progress bars as widgets
(none left red, short of its total), and every slider that WIDGET_CHECKS moves must change
what its widget draws (a live widget must redraw while its cell runs). Each learner notebook
must stop at its first exercise with a short message naming it. Screenshots of every widget
before and after each move land in tests/_browser_screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from sae_course.notebook_build import build_all, exercises, source_paths
from tests.browser.lab import LabPage, LabServer, chromium_driver, wait_for
from tests.browser.widget_checks import WIDGET_CHECKS, drawing, perform

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = ROOT / "tests" / "_build"
SHOTS = ROOT / "tests" / "_browser_screenshots"
SOURCES = source_paths()
IDS = [s.stem for s in SOURCES]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
RUN_TIMEOUT = 600.0  # seconds for one notebook, far above what `ci` needs
REDRAW_TIMEOUT = 8.0  # seconds a widget may take to redraw after a move
MAX_ERROR_LINES = 12  # a learner's "not written yet" message, traceback included
TEXT_PROGRESS = re.compile(r"\d+%\|.*\|")  # tqdm's text bar, as printed without widgets
WIDGET_REPR = re.compile(
    r"^(VBox|HBox|Box|IntSlider|FloatSlider|SelectionSlider|FloatProgress|IntProgress|Output|"
    r"HTML|Label|Button|Dropdown|Text|IntText|Textarea)\(|"
    r"<sae_course\.(widgets|dashboard|playground)[.\w]*( object)? at 0x"
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="session")
def lab() -> Iterator[LabServer]:
    """JupyterLab on a free local port, serving the solution and learner notebooks."""
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="sae-course-browser-"))
    root = work / "course"
    env = dict(os.environ, SAE_COURSE_BUDGET="ci", SAE_COURSE_MODEL="offline",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("MPLBACKEND", None)  # the kernel's own inline backend draws the figures
    server = LabServer(root=root, log_path=SHOTS / "jupyterlab.log", env=env)
    # A terminated run (a CI timeout) stops like Ctrl-C: pytest ends the session, and the
    # finally below still stops the server.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        (root / "solutions").mkdir(parents=True)
        for src in SOURCES:
            shutil.copy2(BUILD_DIR / f"{src.stem}.ipynb", root / "solutions")
        build_all(root / "learner", learner=True)  # what notebooks/ holds when up to date
        server.start()
        yield server
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def page(lab: LabServer) -> Iterator[LabPage]:
    driver = chromium_driver()
    try:
        yield LabPage(driver, lab)
    finally:
        driver.quit()


@pytest.fixture
def opened(page: LabPage, request: pytest.FixtureRequest) -> Iterator[LabPage]:
    """The page; after the test, a screenshot of the whole page and every kernel shut down."""
    yield page
    page.driver.save_screenshot(shot_path(f"page-{request.node.name}"))
    page.server.shutdown_kernels()


def shot_path(name: str) -> str:
    """Where the screenshot called `name` goes."""
    return str(SHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png")


def shot(element: WebElement, name: str) -> None:
    """Save a screenshot of `element` for a person to look at."""
    element.screenshot(shot_path(name))


def text_of(output: dict[str, Any]) -> str:
    """The text of a stream output, or of a display's text/plain."""
    if output["output_type"] == "stream":
        text = output.get("text", "")
    else:
        text = output.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


def output_problems(cells: list[dict[str, Any]]) -> list[str]:
    """Errors, text progress bars and widgets shown as their plain-text repr, by cell."""
    problems = []
    for i, cell in enumerate(cells):
        for out in cell["outputs"]:
            kind = out["output_type"]
            if kind == "error":
                problems.append(f"cell {i}: {out['ename']}: {out['evalue']}")
            elif kind == "stream" and TEXT_PROGRESS.search(text_of(out)):
                problems.append(f"cell {i}: a progress bar printed as text, not a widget: "
                                f"{text_of(out).strip()[-120:]!r}")
            elif kind in ("display_data", "execute_result") and WIDGET_MIME not in out["data"] \
                    and WIDGET_REPR.search(text_of(out).strip()):
                problems.append(f"cell {i}: shows a plain-text repr instead of a widget: "
                                f"{text_of(out).strip()[:120]!r}")
    return problems


def widget_views(page: LabPage, index: int, outputs: list[dict[str, Any]]) -> list[WebElement]:
    """The rendered widget outputs of cell `index` that are not hidden, once none of them
    says "Loading widget..." (or after 20 s)."""
    def views() -> list[WebElement]:
        nodes = page.output_nodes(index)
        return [n for n, o in zip(nodes, outputs, strict=True)
                if WIDGET_MIME in o.get("data", {})
                and "lm-mod-hidden" not in (n.get_attribute("class") or "")]

    def loaded() -> tuple[list[WebElement]] | None:
        found = views()  # wrapped in a tuple: an empty list is an answer too
        return None if any("Loading widget..." in v.text for v in found) else (found,)

    try:
        return wait_for(loaded, 20, f"the widgets of cell {index} to load")[0]
    except TimeoutError:
        return views()


def registered(source: str) -> str | None:
    """The widget class whose WIDGET_CHECKS entry says it is shown by this cell source."""
    return next((n for n, c in WIDGET_CHECKS.items() if re.search(c.shown_by, source)), None)


def check_widget(page: LabPage, view: WebElement, name: str, label: str) -> list[str]:
    """Make each move WIDGET_CHECKS lists for widget `name`; each must change its drawing."""
    problems = []
    shot(view, f"{label}-0-shown")
    for n, move in enumerate(WIDGET_CHECKS[name].moves, start=1):
        before = drawing(view)
        shot(view, f"{label}-{n}a-before-{move.label()}")
        try:
            perform(page.driver, view, move)
            wait_for(lambda b=before: drawing(view) != b, REDRAW_TIMEOUT, "a redraw")
        except (LookupError, TimeoutError) as err:
            problems.append(f"{name}: {move.label()} did not change what it draws ({err})")
        time.sleep(0.5)  # let the new image load before the screenshot
        shot(view, f"{label}-{n}b-after-{move.label()}")
    return problems


def live_problems(page: LabPage, index: int, name: str, view: WebElement) -> list[str]:
    """A live widget must have redrawn by itself while its cell ran, and end with a figure."""
    check, changes = WIDGET_CHECKS[name], page.changes(index)
    problems = []
    if changes < check.min_changes:
        problems.append(f"{name}: changed {changes} time(s) while its cell ran; a live widget "
                        f"should change at least {check.min_changes} times")
    if not view.find_elements(By.TAG_NAME, "img"):
        problems.append(f"{name}: shows no figure once its cell has run")
    return problems


def widget_problems(page: LabPage, stem: str, cells: list[dict[str, Any]]) -> list[str]:
    """Every widget drawn, each one but progress bars covered by WIDGET_CHECKS and redrawn
    by its moves (or live while its cell ran); screenshots of each."""
    problems = []
    for i, cell in enumerate(cells):
        if not any(WIDGET_MIME in o.get("data", {}) for o in cell["outputs"]):
            continue
        for k, view in enumerate(widget_views(page, i, cell["outputs"])):
            text = view.text
            for bad in ("Error displaying widget", "Loading widget..."):
                if bad in text:
                    problems.append(f"cell {i}: a widget shows {text.strip()[:200]!r}")
            if view.find_elements(By.CSS_SELECTOR, ".jupyter-widgets-error-widget"):
                problems.append(f"cell {i}: a widget failed to display: {text.strip()[:200]!r}")
                shot(view, f"{stem}-cell{i:03d}-{k}-failed")
                continue
            if view.find_elements(By.CSS_SELECTOR, ".widget-hprogress, .widget-progress"):
                if view.find_elements(By.CSS_SELECTOR, ".progress-bar-danger"):
                    # tqdm turns a bar red when it is closed before its total (or on an error)
                    problems.append(f"cell {i}: a progress bar ends red, short of its total: "
                                    f"{' '.join(text.split())!r}")
                    shot(view, f"{stem}-cell{i:03d}-{k}-progress-red")
                continue
            name = registered(cell["source"])
            if name is None:
                problems.append(f"cell {i}: shows a widget that no entry of WIDGET_CHECKS "
                                f"covers:\n{cell['source'][-300:]}")
                shot(view, f"{stem}-cell{i:03d}-{k}-unknown")
                continue
            label = f"{stem}-cell{i:03d}-{name}"
            if WIDGET_CHECKS[name].live:
                problems += live_problems(page, i, name, view)
            problems += check_widget(page, view, name, label)
    problems += [f"a widget failed to display while running: {' '.join(e.split())!r}"
                 for e in page.seen()["errors"]]
    return problems


@pytest.mark.parametrize("src", SOURCES, ids=IDS)
def test_solution_notebook_in_jupyterlab(src: Path, opened: LabPage) -> None:
    """Opens unmodified, runs without errors, and every widget draws and redraws."""
    assert (BUILD_DIR / f"{src.stem}.ipynb").exists(), "the build wrote no solution notebook"
    opened.open(f"solutions/{src.stem}.ipynb")
    problems = ["opening it marks it modified"] if opened.dirty() else []
    for i, cell in enumerate(opened.cells()):
        name = registered(cell["source"])
        if name and WIDGET_CHECKS[name].live:
            opened.watch(i)
    started = time.monotonic()
    opened.run_all(RUN_TIMEOUT)
    print(f"{src.stem}: ran in {time.monotonic() - started:.1f} s; "
          f"{opened.seen()['progress']} progress widget(s) shown")
    cells = opened.cells()
    problems += output_problems(cells)
    if not any(o["output_type"] == "error" for c in cells for o in c["outputs"]):
        problems += [f"cell {i} did not run" for i, c in enumerate(cells)
                     if c["type"] == "code" and c["source"].strip() and c["count"] is None]
    problems += widget_problems(opened, src.stem, cells)
    assert not problems, f"{src.stem} in JupyterLab:\n" + "\n".join(problems)


@pytest.mark.parametrize("src", SOURCES, ids=IDS)
def test_learner_notebook_stops_at_first_exercise(src: Path, opened: LabPage) -> None:
    """Run All stops at the first exercise's check with a short message naming it."""
    first = exercises(src)[0]
    opened.open(f"learner/{src.stem}.ipynb")
    problems = ["opening it marks it modified"] if opened.dirty() else []
    opened.run_all(RUN_TIMEOUT)
    cells = opened.cells()
    failed = [i for i, c in enumerate(cells)
              if any(o["output_type"] == "error" for o in c["outputs"])]
    assert failed, f"{src.stem}: Run All raised no error; it should stop at {first.name!r}"
    i = failed[0]
    error = next(o for o in cells[i]["outputs"] if o["output_type"] == "error")
    if cells[i]["source"] != first.check:
        problems.append(f"it stops at cell {i}, not at the check of {first.name!r}: "
                        f"{error['ename']}: {error['evalue']}")
    if error["ename"] != "NotImplementedError" or repr(first.name) not in error["evalue"]:
        problems.append(f"the error does not name {first.name!r}: "
                        f"{error['ename']}: {error['evalue']}")
    node = [n for n in opened.output_nodes(i) if "Error" in n.text or first.name in n.text]
    shown = node[-1].text if node else ANSI.sub("", "\n".join(error["traceback"]))
    shot(opened.cell_node(i), f"learner-{src.stem}-cell{i:03d}-stop")
    lines = [line for line in shown.splitlines() if line.strip()]
    if len(lines) > MAX_ERROR_LINES:
        problems.append(f"the learner sees {len(lines)} lines (more than {MAX_ERROR_LINES}) "
                        f"where the message naming {first.name!r} should be:\n{shown}")
    assert not problems, f"{src.stem} (learner) in JupyterLab:\n" + "\n".join(problems)
