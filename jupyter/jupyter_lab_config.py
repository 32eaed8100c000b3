# JupyterLab for the course, loaded by `make course` (JUPYTER_CONFIG_PATH=<repository>/jupyter).
# The server's root is the repository, so notebooks/, workspace/ (your exercises), exercises/, solutions/
# and docs/ are all in the file browser; the browser opens notebook 00; nothing asks the internet for news,
# updates or extensions (labconfig/default_setting_overrides.json does the same in the front end).
from pathlib import Path

c = get_config()  # noqa: F821 (defined by Jupyter when it reads this file)

c.ServerApp.root_dir = str(Path(__file__).resolve().parents[1])
c.LabApp.default_url = "/lab/tree/notebooks/00_start_here.ipynb"
c.LabApp.news_url = None  # no news feed: JupyterLab then never asks "get notified about official Jupyter news?"
c.LabApp.check_for_updates_class = "jupyterlab.handlers.announcements.NeverCheckForUpdate"
c.LabApp.extension_manager = "readonly"  # lists installed extensions; never queries PyPI
