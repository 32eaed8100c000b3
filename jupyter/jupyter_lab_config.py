# JupyterLab for the course, loaded by `make course` and `sdedu course` (JUPYTER_CONFIG_PATH=<course>/jupyter).
# The server's root is the course folder (the repository, or the folder `sdedu course` made), so notebooks/,
# workspace/ (your exercises), exercises/, solutions/ and docs/ are all in the file browser; the browser opens
# notebook 00; nothing asks the internet for news, updates or extensions (labconfig/default_setting_overrides.json
# does the same in the front end).
import os
from pathlib import Path

from sdedu.threads import learner_threads

c = get_config()  # noqa: F821 (defined by Jupyter when it reads this file)

c.ServerApp.root_dir = str(Path(__file__).resolve().parents[1])
c.LabApp.default_url = "/lab/tree/notebooks/00_start_here.ipynb"
c.LabApp.news_url = None  # no news feed: JupyterLab then never asks "get notified about official Jupyter news?"
c.LabApp.check_for_updates_class = "jupyterlab.handlers.announcements.NeverCheckForUpdate"
c.LabApp.extension_manager = "readonly"  # lists installed extensions; never queries PyPI
# Each kernel's share of the CPU on a shared machine (kernels inherit the server's environment): an
# OMP_NUM_THREADS already set is kept, else usable cores // SDEDU_LEARNERS (sdedu/threads.py, docs/CLASSROOM.md).
os.environ["OMP_NUM_THREADS"] = str(learner_threads())
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
