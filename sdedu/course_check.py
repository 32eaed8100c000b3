"""`sdedu course [DIR] --check`: is this installation ready for the course? One screen, one line per fact.

Each line is `ok`, or `PROBLEM` with what to do; the exit code is 1 when any line is a problem:

    ok       python     3.11.7 (needs >= 3.10)
    ok       torch      2.13.0+cpu, CUDA no
    ok       diffusers  0.42.1
    ok       sdedu      0.1.0 in .../site-packages/sdedu (course files: .../site-packages/sdedu/course_files)
    ok       weights    3 files in 1 model folder(s), sha256 as in each manifest
    ok       threads    kernels get 1 of 2 usable cores (OMP_NUM_THREADS=1, SDEDU_LEARNERS=(unset))
    ok       folder     sdedu-course: writable, the course of sdedu 0.1.0
    all checks passed: sdedu 0.1.0
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import tempfile
from pathlib import Path

from sdedu import __version__
from sdedu.course import CourseVersionError, check_release, course_source
from sdedu.threads import LEARNERS_VARIABLE, learner_threads, usable_cores

MIN_PYTHON = (3, 10)


class Problem(Exception):
    """A check that failed; its message says what to do."""


def check_python() -> str:
    if sys.version_info < MIN_PYTHON:
        raise Problem(f"{platform.python_version()}: sdedu needs Python >= {'.'.join(map(str, MIN_PYTHON))}")
    return f"{platform.python_version()} (needs >= {'.'.join(map(str, MIN_PYTHON))})"


def check_module(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as error:  # a broken install shows here in any form; report it, do not crash the screen
        raise Problem(
            f"does not import ({type(error).__name__}: {error}): pip install -c constraints.txt sdedu"
        ) from None
    extra = f", CUDA {'yes' if module.cuda.is_available() else 'no'}" if name == "torch" else ""
    return f"{module.__version__}{extra}"


def check_sdedu() -> str:
    return f"{__version__} in {Path(__file__).resolve().parent} (course files: {course_source()})"


def check_weights() -> str:
    """Every shipped model (sdedu/weights and any subfolder with a manifest): format and sha256 of each file."""
    from sdedu.manifest import MANIFEST, SHIPPED, check_format, manifest_components, read_manifest, sha256_file

    folders = sorted(path.parent for path in SHIPPED.rglob(MANIFEST))
    if not folders:
        raise Problem(f"no {MANIFEST} under {SHIPPED}: reinstall sdedu")
    files = 0
    for folder in folders:
        manifest = read_manifest(folder)
        check_format(manifest, folder)
        for name, entry in manifest_components(manifest, folder).items():
            path = folder / entry["file"]
            if not path.is_file():
                raise Problem(f"{path} is missing: reinstall sdedu")
            if sha256_file(path) != entry["sha256"]:
                raise Problem(f"{path} does not match its manifest's sha256 for {name!r}: reinstall sdedu")
            files += 1
    return f"{files} files in {len(folders)} model folder(s), sha256 as in each manifest"


def check_threads() -> str:
    try:
        threads = learner_threads()
    except ValueError as error:
        raise Problem(str(error)) from None
    cores = usable_cores()
    where = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS') or '(unset)'}, {LEARNERS_VARIABLE}="
    where += os.environ.get(LEARNERS_VARIABLE) or "(unset)"
    if threads > cores:
        raise Problem(f"kernels would start {threads} threads on {cores} usable cores ({where}): lower OMP_NUM_THREADS")
    return f"kernels get {threads} of {cores} usable cores ({where})"


def check_folder(folder: Path) -> str:
    folder = Path(folder)
    existing = next(p for p in [folder, *folder.resolve().parents] if p.exists())
    if not existing.is_dir():
        raise Problem(f"{existing} is a file; the course needs a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".sdedu-check-"):
            pass
    except OSError as error:
        raise Problem(f"cannot write in {existing}: {error.strerror}") from None
    try:
        found = check_release(folder)
    except CourseVersionError as error:
        raise Problem(str(error)) from None
    if not folder.exists():
        return f"{folder}: not there yet, `sdedu course {folder}` will make it ({existing} is writable)"
    return f"{folder}: writable, " + (f"the course of sdedu {found}" if found else "no course copied into it yet")


def main(folder) -> int:
    """Print one line per check; 0 when all pass, 1 when any is a problem."""
    checks = [
        ("python", check_python),
        ("torch", lambda: check_module("torch")),
        ("diffusers", lambda: check_module("diffusers")),
        ("sdedu", check_sdedu),
        ("weights", check_weights),
        ("threads", check_threads),
        ("folder", lambda: check_folder(folder)),
    ]
    problems = 0
    for name, check in checks:
        try:
            status, text = "ok     ", check()
        except (Problem, FileNotFoundError) as error:
            status, text, problems = "PROBLEM", str(error), problems + 1
        except Exception as error:  # e.g. a WeightsError: shown on its line, the other checks still run
            status, text, problems = "PROBLEM", f"{type(error).__name__}: {error}", problems + 1
        print(f"{status}  {name:<9}  {text}")
    print(f"{'all checks passed' if not problems else f'{problems} problem(s)'}: sdedu {__version__}")
    return 1 if problems else 0
