"""A learner's view: JupyterLab as `make course` starts it, in a real (headless) browser.

The server runs with the course's configuration (jupyter/ on JUPYTER_CONFIG_PATH, as in `make course`)
over a temporary copy of the course laid out like the repository (notebooks/, exercises/,
solutions/, docs/, and a workspace/ filled by sdedu.workspace), so nothing is written back into the
repository. The tests check, without a browser, that the server lands on notebook 00, serves every
folder the course mentions and asks the internet for nothing; then, in Debian's Chromium driven by
Playwright, that a learner lands on notebook 00, opens an exercise of their workspace from the file
browser, and is never asked about Jupyter news; and that a course notebook runs every cell from the
Run menu with a matplotlib figure and an ipywidgets slider rendered. Screenshots are saved under
build/browser/ for a person to look at.

Only where Chromium or Playwright cannot be had are the browser tests skipped, with the reason.
"""

import http.client
import json
import os
import pathlib
import re
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
# The test's own user setting: render every cell (JupyterLab 4 renders only the visible ones by default).
# No news or update settings here: the course's shipped configuration must switch those off by itself.
SETTINGS = {"@jupyterlab/notebook-extension/tracker": '{"windowingMode": "none"}'}
START_HERE = "notebooks/00_start_here.ipynb"
NEWS_PROMPT = "official Jupyter news"  # "Would you like to get notified about official Jupyter news?"


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


def course_copy(root: pathlib.Path) -> pathlib.Path:
    """The course laid out like the repository under `root`; returns the learner's first exercise."""
    from sdedu.workspace import copy_new_exercises

    (root / "notebooks").mkdir()
    for name in (pathlib.Path(START_HERE).name, NOTEBOOK):
        shutil.copy(ROOT / "notebooks" / name, root / "notebooks" / name)
    for folder in ("exercises", "solutions", "docs"):
        shutil.copytree(ROOT / folder, root / folder)
    return copy_new_exercises(root / "exercises", root / "workspace")[0]


def get(base: str, path: str, token: str):
    """(status, Location header, parsed JSON or None) of GET path, redirects not followed."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", f"{path}{'&' if '?' in path else '?'}token={token}")
        response = connection.getresponse()
        body = response.read()
        is_json = "json" in (response.getheader("Content-Type") or "")
        return response.status, response.getheader("Location"), json.loads(body) if is_json else None
    finally:
        connection.close()


def wait_for_session(base: str, token: str, path: str, timeout_s: float = 180) -> None:
    """Wait until JupyterLab has opened `path` (a notebook opened in the browser gets a kernel session)."""
    deadline = time.monotonic() + timeout_s
    while True:
        sessions = get(base, "/api/sessions", token)[2] or []
        if any(session.get("path") == path for session in sessions):
            return
        assert time.monotonic() < deadline, f"{path} was not opened within {timeout_s:g} s; sessions: {sessions}"
        time.sleep(1)


@pytest.fixture(scope="module")
def course_server(tmp_path_factory):
    """JupyterLab on loopback with the course's configuration over a copy of the course.

    Yields (base URL, token, the course copy's root, the learner's first exercise).
    """
    tmp_path = tmp_path_factory.mktemp("course")
    root = tmp_path / "course"
    root.mkdir()
    exercise = course_copy(root)
    settings = tmp_path / "user-settings"
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
        f"--ServerApp.root_dir={root}",  # the copy instead of the repository; the rest is the course's config
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={tmp_path / 'lab-workspaces'}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    env = dict(
        os.environ,
        JUPYTER_CONFIG_PATH=str(ROOT / "jupyter"),  # as `make course` sets it
        JUPYTER_CONFIG_DIR=str(tmp_path / "no-user-config"),  # this machine's own ~/.jupyter stays out
        SDEDU_QUICK="1",
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )
    env.pop("MPLBACKEND", None)  # the kernel must use the inline backend, as for a learner
    log_path = tmp_path / "jupyterlab.log"
    log = open(log_path, "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield base, token, root, exercise
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_the_course_server_lands_on_notebook_00_at_the_root_and_asks_the_internet_for_nothing(course_server):
    base, token, _, exercise = course_server
    status, location, _ = get(base, "/", token)
    assert status in (301, 302) and location.split("?")[0].endswith(f"/lab/tree/{START_HERE}"), (status, location)
    listing = get(base, "/api/contents", token)[2]
    assert {"notebooks", "workspace", "exercises", "solutions", "docs"} <= {item["name"] for item in listing["content"]}
    assert get(base, f"/api/contents/workspace/{exercise.name}?content=0", token)[0] == 200
    # The front end's defaults, after the course's overrides: no news prompt, no update check, no extension manager.
    notification = get(base, "/lab/api/settings/@jupyterlab/apputils-extension:notification", token)[2]
    defaults = {key: value.get("default") for key, value in notification["schema"]["properties"].items()}
    assert (defaults["fetchNews"], defaults["checkForUpdates"]) == ("false", False)
    manager = get(base, "/lab/api/settings/@jupyterlab/extensionmanager-extension:plugin", token)[2]
    assert manager["schema"]["properties"]["enabled"]["default"] is False
    assert get(base, "/lab/api/news", token)[2] == {"news": []}  # the server fetches no feed either


def test_a_learner_lands_on_notebook_00_and_opens_an_exercise_from_the_file_browser(course_server):
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    base, token, _, exercise = course_server
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{base}/?token={token}", timeout=120_000)  # what the browser opened by `make course` loads
            page.locator(".lm-TabBar-tab", has_text="00_start_here.ipynb").first.wait_for(timeout=120_000)
            page.locator(".jp-Notebook h1", has_text="Start here").first.wait_for(timeout=120_000)
            wait_for_session(base, token, START_HERE)

            browser_panel = page.locator("#filebrowser")
            files_tab = page.locator('.lm-TabBar-tab[data-id="filebrowser"]')  # the folder icon on the left
            files_tab.wait_for(timeout=60_000)
            if "lm-mod-current" not in (files_tab.get_attribute("class") or ""):  # a click on the open one closes it
                files_tab.click()
            browser_panel.wait_for(state="visible", timeout=60_000)
            browser_panel.locator(".jp-BreadCrumbs-home").click()  # the server's root: the repository

            def item(name):
                # The inner locator of `has=` is matched inside each item: it must not start at #filebrowser.
                text = page.locator(".jp-DirListing-itemText", has_text=re.compile(f"^{re.escape(name)}$"))
                return browser_panel.locator(".jp-DirListing-item", has=text)

            for folder in ("docs", "exercises", "notebooks", "solutions", "workspace"):
                item(folder).wait_for(timeout=60_000)
            item("workspace").dblclick()
            item(exercise.name).dblclick(timeout=60_000)
            page.locator(".lm-TabBar-tab", has_text=exercise.name).first.wait_for(timeout=120_000)
            page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
            wait_for_session(base, token, f"workspace/{exercise.name}")

            assert page.get_by_text(NEWS_PROMPT).count() == 0, "JupyterLab asked about Jupyter news"
        finally:
            page.screenshot(path=str(SCREENSHOTS / "workspace_exercise.png"), full_page=False)
            browser.close()
            for session in get(base, "/api/sessions", token)[2] or []:  # free the kernels for the next test
                host, port = base.removeprefix("http://").split(":")
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
                connection.request("DELETE", f"/api/sessions/{session['id']}?token={token}")
                connection.getresponse().read()
                connection.close()


def test_course_notebook_runs_in_a_real_browser(course_server):
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    base, token, _, _ = course_server
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            # A workspace of its own: the layout the previous test left (its open notebooks) is not restored here.
            page.goto(f"{base}/lab/workspaces/run-all/tree/notebooks/{NOTEBOOK}?token={token}", timeout=120_000)
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
