"""How the browser test drives each widget of `sae_course.widgets`, by class name.

Every widget class needs an entry in WIDGET_CHECKS (tests/test_widget_browser_checks.py fails
otherwise): which cell shows it, and the moves a person would make, each of which must change
what the widget draws within a few seconds. A helper class in the widgets module that is not
a widget goes in NOT_WIDGETS with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement


@dataclass(frozen=True)
class Move:
    """One thing a person does to a slider: press keys on its handle, or drag it.

    `control` is the slider's description label; `keys` the keys pressed in turn (with
    how="keys"); `to` where to drag the handle, as a fraction of the track (with how="drag").
    """

    control: str
    how: Literal["keys", "drag"]
    keys: tuple[str, ...] = ()
    to: float = 0.0

    def label(self) -> str:
        if self.how == "drag":
            return f"drag '{self.control}' to {self.to:.0%}"
        names = {Keys.ARROW_LEFT: "Left", Keys.ARROW_RIGHT: "Right", Keys.HOME: "Home",
                 Keys.END: "End"}
        return f"press {'+'.join(names.get(k, k) for k in self.keys)} on '{self.control}'"


@dataclass(frozen=True)
class WidgetCheck:
    """How to find a widget's cell (a regex on the cell's source) and what to do to it.

    A `live` widget redraws by itself while its cell runs (a training monitor): the test
    counts its changes during the run and needs at least `min_changes` of them.
    """

    shown_by: str
    moves: tuple[Move, ...] = ()
    live: bool = False
    min_changes: int = 2


WIDGET_CHECKS: dict[str, WidgetCheck] = {
    "ToyModelExplorer": WidgetCheck(
        shown_by=r"\bwidgets\.toy_model_explorer\(|\bToyModelExplorer\(",
        moves=(
            Move("1-S (p)", "keys", keys=(Keys.ARROW_RIGHT,)),
            Move("importance decay", "drag", to=0.0),
        ),
    ),
    "DecoderScrubber": WidgetCheck(
        shown_by=r"\bwidgets\.decoder_scrubber\(|\bDecoderScrubber\(",
        moves=(
            Move("snapshot", "keys", keys=(Keys.HOME,)),
            Move("snapshot", "drag", to=0.5),
        ),
    ),
    "TrainingMonitor": WidgetCheck(
        shown_by=r"\bTrainingMonitor\(",
        live=True,  # its summary and curves follow train_sae's log entries
    ),
}

NOT_WIDGETS: dict[str, str] = {}


def slider(view: WebElement, control: str) -> WebElement:
    """The slider in `view` whose description label reads `control`."""
    for box in view.find_elements(By.CSS_SELECTOR, ".widget-slider"):
        labels = box.find_elements(By.CSS_SELECTOR, ".widget-label")
        if labels and labels[0].text.strip() == control:
            return box
    found = [b.text for b in view.find_elements(By.CSS_SELECTOR, ".widget-slider .widget-label")]
    raise LookupError(f"no slider labelled {control!r} in the widget (found {found})")


def drawing(view: WebElement) -> str:
    """A fingerprint of what the widget draws: its images' data and its output text."""
    parts = [img.get_attribute("src") or "" for img in view.find_elements(By.TAG_NAME, "img")]
    parts += [o.text for o in view.find_elements(By.CSS_SELECTOR, ".widget-output")]
    return "\n".join(parts)


def perform(driver: WebDriver, view: WebElement, move: Move) -> None:
    """Do `move` to the widget shown in `view`, through the browser's keyboard or mouse."""
    box = slider(view, move.control)
    handle = box.find_element(By.CSS_SELECTOR, ".noUi-handle")
    if move.how == "keys":
        for key in move.keys:
            handle.send_keys(key)
            time.sleep(0.1)
        return
    track = box.find_element(By.CSS_SELECTOR, ".noUi-base")
    width = track.size["width"]
    handle_x = handle.location["x"] + handle.size["width"] / 2
    target_x = track.location["x"] + move.to * width
    (ActionChains(driver).click_and_hold(handle).pause(0.1)
     .move_by_offset(int(round(target_x - handle_x)), 0).pause(0.1).release().perform())
