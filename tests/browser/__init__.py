"""The browser test: every notebook run in JupyterLab in headless Chromium.

Run by scripts/test_browser.sh, not by the default `pytest`: its module is not named `test_*.py`,
so only a command that names it collects it.
"""
