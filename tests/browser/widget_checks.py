"""How the browser test drives each widget of the course (the classes of WIDGET_MODULES), by
class name.

Every widget class needs an entry in WIDGET_CHECKS (tests/test_widget_browser_checks.py fails
otherwise): which cell shows it, and the moves a person would make, each of which must change
what the widget draws within a few seconds. A helper class in a widget module that is not
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

WIDGET_MODULES = ("sae_course.widgets", "sae_course.dashboard", "sae_course.playground")
"""The modules (or packages) whose public classes are widgets needing a browser check."""


@dataclass(frozen=True)
class Move:
    """One thing a person does to a control, found by its description label `control`.

    A slider: press `keys` in turn on its handle (how="keys"), or drag the handle to `to`,
    a fraction of the track (how="drag"). A text box (Text, IntText, Textarea): replace its
    text with `text` (how="type"), then press Enter, or click the button labelled `submit`
    when given. A dropdown: choose the first option whose text starts with `text`
    (how="select").
    """

    control: str
    how: Literal["keys", "drag", "type", "select"]
    keys: tuple[str, ...] = ()
    to: float = 0.0
    text: str = ""
    submit: str = ""

    def label(self) -> str:
        if self.how == "drag":
            return f"drag '{self.control}' to {self.to:.0%}"
        if self.how == "type":
            then = f", click '{self.submit}'" if self.submit else ", Enter"
            return f"type {self.text!r} in '{self.control}'{then}"
        if self.how == "select":
            return f"choose {self.text!r} in '{self.control}'"
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
    "FeatureDashboard": WidgetCheck(  # notebook 05_interpreting_features
        shown_by=r"\bfeature_dashboard\(|\bFeatureDashboard\(",
        moves=(
            Move("latent", "type", text="7"),
            Move("best for", "select", text="quote_mark"),
            Move("logit lens", "type", text="the"),
            Move("your text", "type", text='The cook said, "I bake bread."',
                 submit="run on my text"),
            Move("latent", "type", text="99999"),  # no such latent: a message, not a traceback
        ),
    ),
    "SteeringPlayground": WidgetCheck(  # notebook 06 (steering)
        shown_by=r"\bsteering_playground\(|\bSteeringPlayground\(",
        moves=(
            Move("method", "select", text="SAE latent: clamp"),
            Move("latent", "type", text="100"),
            Move("alpha", "drag", to=0.8),
            Move("prompt", "type", text="Mara was a cook. Mara had a cat called Tom.",
                 submit="generate"),
            Move("latent", "type", text="99999"),  # no such latent: a message, not a traceback
        ),
    ),
}

NOT_WIDGETS: dict[str, str] = {
    "ScoredText": "a record: one continuation of the steering playground and its scores",
    "PlaygroundRun": "a record: what one click of the steering playground's generate made",
}


def slider(view: WebElement, control: str) -> WebElement:
    """The slider in `view` whose description label reads `control`."""
    for box in view.find_elements(By.CSS_SELECTOR, ".widget-slider"):
        labels = box.find_elements(By.CSS_SELECTOR, ".widget-label")
        if labels and labels[0].text.strip() == control:
            return box
    found = [b.text for b in view.find_elements(By.CSS_SELECTOR, ".widget-slider .widget-label")]
    raise LookupError(f"no slider labelled {control!r} in the widget (found {found})")


def control(view: WebElement, selector: str, label: str, what: str) -> WebElement:
    """The control (`selector`) in `view` whose description label reads `label`."""
    for box in view.find_elements(By.CSS_SELECTOR, selector):
        labels = box.find_elements(By.CSS_SELECTOR, ".widget-label")
        if labels and labels[0].text.strip() == label:
            return box
    found = [b.text for b in view.find_elements(By.CSS_SELECTOR, f"{selector} .widget-label")]
    raise LookupError(f"no {what} labelled {label!r} in the widget (found {found})")


def drawing(view: WebElement) -> str:
    """A fingerprint of what the widget draws: its images' data, its output text and the
    text of its HTML panels."""
    parts = [img.get_attribute("src") or "" for img in view.find_elements(By.TAG_NAME, "img")]
    parts += [o.text for o in view.find_elements(By.CSS_SELECTOR, ".widget-output")]
    parts += [h.text for h in view.find_elements(By.CSS_SELECTOR, ".widget-html-content")]
    return "\n".join(parts)


def perform(driver: WebDriver, view: WebElement, move: Move) -> None:
    """Do `move` to the widget shown in `view`, through the browser's keyboard or mouse."""
    if move.how == "type":
        box = control(view, ".widget-text, .widget-textarea", move.control, "text box")
        field = box.find_element(By.CSS_SELECTOR, "input, textarea")
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
        field.send_keys(move.text)
        if not move.submit:
            field.send_keys(Keys.ENTER)
            return
        for button in view.find_elements(By.CSS_SELECTOR, "button"):
            if button.text.strip() == move.submit:
                button.click()
                return
        raise LookupError(f"no button labelled {move.submit!r} in the widget")
    if move.how == "select":
        box = control(view, ".widget-dropdown", move.control, "dropdown")
        options = box.find_elements(By.TAG_NAME, "option")
        match = next((o for o in options if o.text.strip().startswith(move.text)), None)
        if match is None:
            raise LookupError(f"no option starting {move.text!r} in {move.control!r} "
                              f"(found {[o.text for o in options[:8]]} ...)")
        match.click()
        return
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
