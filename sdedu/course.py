"""`sdedu course [DIR]`: the course in a learner's own folder, opened in JupyterLab.

A learner who ran `pip install sdedu` has no git clone: the wheel carries the course in
`sdedu/course_files/` (setup.py copies notebooks/, exercises/, solutions/, docs/, jupyter/ and the
README there at build time; in a clone the repository itself is the course). `sdedu course DIR`
(default ./sdedu-course):

1. refuses a folder that holds another release of the course (`CourseVersionError`): its notebooks
   were written for another library, and would fail part-way with a confusing error;
2. copies every course file that DIR lacks, and each exercise into DIR/workspace/, never overwriting
   a file that is already there (`sdedu.workspace.copy_once`): what a learner wrote stays theirs;
3. records the release in DIR/.sdedu-course.json;
4. starts JupyterLab in DIR with the course's configuration (DIR/jupyter: notebook 00 opens first,
   nothing asks the internet, kernels get their share of the CPU, see sdedu.threads) and the flags of
   `make course`: --ip=127.0.0.1, --allow-root as root, --no-browser where there is no screen.

Releases: a version is MAJOR.MINOR.PATCH; a patch release never changes the course, so a folder
works with every library of its MAJOR.MINOR (docs/CHANGELOG.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sdedu import __version__
from sdedu.workspace import copy_new_exercises, copy_once

PACKAGED = Path(__file__).with_name("course_files")  # in an installed wheel
CLONE = Path(__file__).resolve().parents[1]  # a git clone or an editable install
PARTS = ("notebooks", "exercises", "solutions", "docs", "jupyter", "README.md")
SKIPPED = {".ipynb_checkpoints", "__pycache__"}
STAMP = ".sdedu-course.json"
START_PAGE = "notebooks/00_start_here.ipynb"


class CourseVersionError(RuntimeError):
    """A course folder was made by a release of sdedu other than the one running it."""


def course_source() -> Path:
    """Where the course files are: the wheel's course_files/, else the clone this library runs from."""
    for place in (PACKAGED, CLONE):
        if (place / START_PAGE).is_file():
            return place
    raise FileNotFoundError(
        f"the course files are missing: neither {PACKAGED} nor {CLONE} holds {START_PAGE} (reinstall sdedu)"
    )


def release(version: str) -> tuple[int, int]:
    """(MAJOR, MINOR) of a version string such as "0.1.0": the part that says which course it is."""
    parts = str(version).split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        raise ValueError(f"version must look like MAJOR.MINOR[.PATCH]; got {version!r}")
    return int(parts[0]), int(parts[1])


def folder_version(folder: Path) -> str | None:
    """The sdedu version that made the course in `folder` (its stamp), or None when it has none."""
    path = Path(folder) / STAMP
    if not path.is_file():
        return None
    try:
        version = json.loads(path.read_text(encoding="utf-8"))["sdedu_version"]
        release(version)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise CourseVersionError(
            f"{path} is damaged: expected {{'sdedu_version': 'MAJOR.MINOR.PATCH'}}; delete it to adopt the folder"
        ) from None
    return version


def check_release(folder: Path, version: str = __version__) -> str | None:
    """Raise CourseVersionError when `folder` holds the course of another release; return its version."""
    found = folder_version(folder)
    if found is None or release(found) == release(version):
        return found
    if release(found) < release(version):
        problem = f"is older than this sdedu {version}: its notebooks may call names this library no longer has"
        fix = f"start the new course in a new folder (sdedu course {Path(folder).name}-{version}) and bring your work across"
    else:
        problem = f"is newer than this sdedu {version}"
        fix = "upgrade sdedu (pip install -U sdedu), or use a folder made by this version"
    raise CourseVersionError(
        f"{folder} holds the course of sdedu {found}, which {problem}. Your files there stay as they are: {fix}."
    )


def course_files(source: Path) -> list[Path]:
    """Every file of the course under source, as paths relative to it, in a fixed order."""
    files = []
    for part in PARTS:
        path = source / part
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [p.relative_to(source) for p in found if not SKIPPED.intersection(p.parts)]
    return files


def copy_course(folder: Path, source: Path | None = None) -> tuple[list[Path], int]:
    """Copy the course files that `folder` lacks, and the exercises into folder/workspace; never overwrite.

    Returns:
        (the files copied now, the number already there and left exactly as they were).
    """
    folder, source = Path(folder), Path(source or course_source())
    check_release(folder)
    files = course_files(source)
    new = [folder / name for name in files if copy_once(source / name, folder / name)]
    new += copy_new_exercises(folder / "exercises", folder / "workspace")  # each exercise, once, into workspace/
    (folder / STAMP).write_text(json.dumps({"sdedu_version": __version__}) + "\n", encoding="utf-8")
    kept = len(files) + len(list((folder / "exercises").glob("*.ipynb"))) - len(new)
    return new, kept


def lab_command(folder: Path, port: int | None = None, environ=None) -> tuple[list[str], dict]:
    """The JupyterLab command line and environment for the course in `folder` (as `make course` starts it)."""
    environ = dict(os.environ if environ is None else environ)
    config = str(Path(folder).resolve() / "jupyter")
    environ["JUPYTER_CONFIG_PATH"] = os.pathsep.join(filter(None, [config, environ.get("JUPYTER_CONFIG_PATH")]))
    argv = [sys.executable, "-m", "jupyterlab", "--ip=127.0.0.1"]
    if hasattr(os, "getuid") and os.getuid() == 0:
        argv.append("--allow-root")  # JupyterLab refuses root (containers, servers) unless told
    has_screen = sys.platform in ("darwin", "win32") or environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")
    if not has_screen:
        argv.append("--no-browser")  # JupyterLab prints the URL instead
    if port is not None:
        argv.append(f"--port={port}")
    return argv, environ


def main(folder, lab: bool = True, port: int | None = None) -> int:
    """Copy the course into `folder`, then (lab=True) replace this process by JupyterLab there."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file; expected a folder for the course")
    new, kept = copy_course(folder)
    print(f"the course is in {folder}: {len(new)} files copied, {kept} already there and left as they were")
    print(f"your exercises are in {folder / 'workspace'} (never overwritten)")
    if not lab:
        return 0
    argv, environ = lab_command(folder, port)
    print(f"opening JupyterLab on {START_PAGE}; without a screen, open the URL it prints (Ctrl-C stops it)")
    sys.stdout.flush()
    os.chdir(folder)
    if os.name == "posix":
        os.execve(sys.executable, argv, environ)  # JupyterLab takes over: Ctrl-C and signals reach it directly
    return subprocess.call(argv, env=environ)
