"""A JupyterLab server on 127.0.0.1 and a headless Chromium driving it, for the browser test.

The server runs in its own process group with a token, its own settings and workspaces
(so a person's JupyterLab settings never change what the test sees), and is stopped by its
process group id however the test ends.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import JavascriptException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

# JupyterLab settings for the test only: every cell stays in the DOM (no windowing), and no
# news or update checks (nothing may reach the internet).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "checkForUpdates": False, "fetchNews": "false",
    },
}
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    """A JupyterLab server started by `start`; `stop` ends its whole process group."""

    root: Path
    log_path: Path
    env: dict[str, str]
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        """Start the server and wait until its API answers."""
        config = self.root.parent / f"{self.root.name}-lab"
        for name, values in LAB_SETTINGS.items():
            plugin, file = name.rsplit("/", 1)
            target = config / "settings" / plugin / file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values), encoding="utf-8")
        self.port = free_port()
        command = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
            "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            f"--LabApp.user_settings_dir={config / 'settings'}",
            f"--LabApp.workspaces_dir={config / 'workspaces'}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.root,
            start_new_session=True,
        )
        log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited early; see {self.log_path}")
            try:
                self.api("GET", "status")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s; see {self.log_path}")

    def api(self, method: str, path: str) -> Any:
        """Call the server's REST API; returns the decoded JSON answer (None when empty)."""
        request = urllib.request.Request(
            f"{self.base}/api/{path}", method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = answer.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Shut down every kernel the server runs."""
        for kernel in self.api("GET", "kernels"):
            self.api("DELETE", f"kernels/{kernel['id']}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) by its process group; safe to call twice."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            self.shutdown_kernels()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def chromium_driver(width: int = 1400, height: int = 1000) -> webdriver.Chrome:
    """Headless Chromium through Debian's matching chromedriver (Selenium Manager not used)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--force-device-scale-factor=1",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(120)
    return driver


# Records, for the page's lifetime, what appeared in the DOM even briefly: progress widgets
# (tqdm bars close themselves when done) and widgets that failed to display.
OBSERVER_JS = """
window.__seen = {progress: 0, errors: []};
window.__watched = {};
new MutationObserver(mutations => {
  for (const m of mutations) for (const n of m.addedNodes) {
    if (n.nodeType !== 1) continue;
    if (n.matches('.widget-hprogress, .widget-progress') ||
        n.querySelector('.widget-hprogress, .widget-progress')) window.__seen.progress++;
    const text = n.textContent || '';
    if (text.includes('Error displaying widget') || n.matches('.jupyter-widgets-error-widget')
        || n.querySelector('.jupyter-widgets-error-widget')) {
      window.__seen.errors.push(text.slice(0, 300));
    }
  }
}).observe(document.body, {childList: true, subtree: true});
"""

# The open notebook as its model holds it: per cell, type, source, outputs, execution count.
CELLS_JS = """
const panel = window.jupyterapp.shell.currentWidget;
return panel.content.widgets.map(cell => ({
  type: cell.model.type,
  source: cell.model.sharedModel.getSource(),
  outputs: cell.model.type === 'code' ? cell.model.outputs.toJSON() : [],
  count: cell.model.type === 'code' ? cell.model.executionCount : null,
}));
"""


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    """Poll `condition` until it returns something truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (JavascriptException, WebDriverException):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# Counts how often what the widgets of one cell draw (their texts and images) changes from
# one drawing to another (their first appearance is not a change).
WATCH_JS = """
const index = arguments[0];
const area = window.jupyterapp.shell.currentWidget.content.widgets[index].outputArea.node;
const drawing = () => [...area.querySelectorAll('.jupyter-widgets')].map(w => [
  ...[...w.querySelectorAll('.widget-html-content, .widget-readout')].map(t => t.textContent),
  ...[...w.querySelectorAll('img')].map(i => i.src.length + i.src.slice(-64)),
].filter(part => part).join('|')).filter(part => part).join('\\n');
const record = window.__watched[index] = {changes: 0, last: drawing()};
new MutationObserver(() => {
  const now = drawing();
  if (now === record.last) return;
  if (record.last) record.changes++;
  record.last = now;
}).observe(area, {childList: true, subtree: true, characterData: true, attributes: true});
"""


class LabPage:
    """One notebook open in JupyterLab, driven through its menus and read through its model."""

    def __init__(self, driver: webdriver.Chrome, server: LabServer) -> None:
        self.driver = driver
        self.server = server

    def open(self, path: str, timeout: float = 120.0) -> None:
        """Open the notebook at `path` (relative to the server root) with a fresh workspace,
        and wait until its kernel is started and idle."""
        self.driver.get(f"{self.server.base}/lab/tree/{path}?reset&token={self.server.token}")
        wait_for(lambda: self.js(
            "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            "return !!(w && w.content && w.content.widgets && w.context.isReady);"
        ), timeout, f"JupyterLab to open {path}")
        self.js(OBSERVER_JS)
        wait_for(lambda: self.kernel_status() == "idle", timeout, f"the kernel of {path}")
        time.sleep(1.0)  # JupyterLab writes the kernel's metadata as it answers

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def kernel_status(self) -> str | None:
        return self.js(
            "const s = window.jupyterapp.shell.currentWidget.sessionContext.session;"
            "return s && s.kernel ? s.kernel.status : null;"
        )

    def dirty(self) -> bool:
        """Whether JupyterLab marks the open notebook as modified."""
        return bool(self.js("return window.jupyterapp.shell.currentWidget.context.model.dirty;"))

    def menu(self, menu: str, item: str) -> None:
        """Choose an item from the menu bar, as a person would: e.g. Run, then Run All Cells."""
        self.driver.find_element(
            By.XPATH, f"//li[contains(@class,'lm-MenuBar-item')][.//div[text()='{menu}']]"
        ).click()
        wait_for(lambda: self.driver.find_element(
            By.XPATH, "//li[contains(@class,'lm-Menu-item')]"
            f"[.//div[contains(@class,'lm-Menu-itemLabel') and text()='{item}']]"
        ), 10, f"{item!r} in the {menu} menu").click()

    def run_all(self, timeout: float) -> None:
        """Run all cells from the Run menu and wait until nothing is queued and the kernel idles."""
        self.menu("Run", "Run All Cells")
        wait_for(lambda: self.busy(), 30, "the notebook to start running", every=0.1)

        def settled() -> bool:
            if self.busy():
                return False
            time.sleep(1.0)
            return not self.busy()

        wait_for(settled, timeout, "all cells to finish", every=0.5)

    def busy(self) -> bool:
        """A cell is queued or running, or the kernel is not idle."""
        return bool(self.js(
            "const panel = window.jupyterapp.shell.currentWidget;"
            "const queued = [...panel.node.querySelectorAll('.jp-InputPrompt')]"
            "  .some(p => p.textContent.includes('*'));"
            "const k = panel.sessionContext.session && panel.sessionContext.session.kernel;"
            "return queued || !k || k.status !== 'idle';"
        ))

    def watch(self, index: int) -> None:
        """Start counting how often the widgets of cell `index` change what they draw."""
        self.js(WATCH_JS, index)

    def changes(self, index: int) -> int:
        """How often the widgets of a watched cell changed what they draw."""
        return int(self.js("return window.__watched[arguments[0]].changes;", index))

    def cells(self) -> list[dict[str, Any]]:
        return self.js(CELLS_JS)

    def seen(self) -> dict[str, Any]:
        """What the page's observer recorded since the notebook was opened."""
        return self.js("return window.__seen;")

    def cell_node(self, index: int) -> WebElement:
        """The DOM node of cell `index`, scrolled into view."""
        node = self.js(
            "const n = window.jupyterapp.shell.currentWidget.content.widgets[arguments[0]].node;"
            "n.scrollIntoView({block: 'start'}); return n;", index,
        )
        time.sleep(0.2)
        return node

    def output_nodes(self, index: int) -> list[WebElement]:
        """The rendered outputs of cell `index`, one per output of its model, in order (the
        outputs a widget holds inside itself are not among them)."""
        self.cell_node(index)
        return self.js(
            "const cell = window.jupyterapp.shell.currentWidget.content.widgets[arguments[0]];"
            "return cell.outputArea.widgets.map("
            "  child => child.node.querySelector('.jp-OutputArea-output'));", index,
        )
