"""A learner's view: JupyterLab in a real (headless) browser runs a course notebook.

Starts JupyterLab on loopback over a temporary copy of a notebook (so nothing is written back
into the repository), opens it in Debian's Chromium driven by Playwright, runs every cell from
the Run menu, and checks that a matplotlib figure and an ipywidgets slider rendered. The screenshot
is saved under build/browser/ for a person to look at.

Only where Chromium or Playwright cannot be had is the test skipped, with the reason.
"""

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = "02_forward_diffusion.ipynb"
SCREENSHOTS = ROOT / "build" / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Render every cell (JupyterLab 4 renders only the visible ones by default) and ask for no news.
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": '{"windowingMode": "none"}',
    "@jupyterlab/apputils-extension/notification": '{"fetchNews": "false", "checkForUpdates": false}',
}


def chromium_or_skip():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed (make test installs Debian's chromium where it can run apt-get)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        pytest.skip(f"playwright is not importable: {error}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on loopback serving a copy of the notebook; yields its base URL."""
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, tmp_path / NOTEBOOK)
    settings = tmp_path / ".settings"
    for plugin, value in SETTINGS.items():
        (settings / plugin).parent.mkdir(parents=True, exist_ok=True)
        (settings / plugin).with_suffix(".jupyterlab-settings").write_text(value)
    port, token = free_port(), "sdedu-browser-test"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={tmp_path}",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={tmp_path / '.workspaces'}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    env = dict(os.environ, SDEDU_QUICK="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.pop("MPLBACKEND", None)  # the kernel must use the inline backend, as for a learner
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_course_notebook_runs_in_a_real_browser(jupyterlab):
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    base, token = jupyterlab
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", timeout=120_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            # The kernel must be connected before Run All, or JupyterLab drops the request.
            page.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for(timeout=180_000)
            page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").first.click()

            code_cells = page.locator(".jp-Notebook .jp-CodeCell").count()
            deadline = time.monotonic() + 300
            started, prompts, next_click = False, [], 0.0
            while True:
                assert time.monotonic() < deadline, f"cells not finished after 300 s: {prompts}"
                prompts = page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").all_inner_texts()
                started = started or any(p.strip("[]: ") for p in prompts)
                if not started and time.monotonic() > next_click:
                    page.get_by_role("menuitem", name="Run", exact=True).click()
                    run_all = page.get_by_role("menuitem", name="Run All Cells", exact=True)
                    run_all.wait_for(state="visible")
                    time.sleep(1)  # Lumino ignores a click on a menu that is still opening
                    run_all.click()
                    next_click = time.monotonic() + 30
                done = [p for p in prompts if p.strip("[]: ").isdigit()]
                if len(done) == code_cells:
                    break
                time.sleep(1)

            tracebacks = page.locator("[data-mime-type='application/vnd.jupyter.error']")
            assert tracebacks.count() == 0, tracebacks.first.inner_text()[:2000]

            figures = page.locator(".jp-OutputArea-output img")
            assert figures.count() >= 1, "no figure rendered"
            assert figures.first.evaluate("img => img.naturalWidth") > 100, "the figure is empty"

            slider = page.locator(".jp-OutputArea-output .widget-slider")
            slider.first.wait_for(timeout=60_000)
            assert slider.count() >= 1, "no ipywidgets slider rendered"
            slider.first.scroll_into_view_if_needed()
        finally:
            page.screenshot(path=str(SCREENSHOTS / NOTEBOOK.replace(".ipynb", ".png")), full_page=False)
            browser.close()
