"""`sdedu course`: the course copied once into a learner's folder, its release checked, JupyterLab's command line,
the setup check, and each kernel's share of the CPU (sdedu.threads). The installed wheel is tests/test_wheel.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdedu import __version__
from sdedu.cli import main as cli
from sdedu.course import (
    STAMP,
    CourseVersionError,
    check_release,
    copy_course,
    course_files,
    course_source,
    lab_command,
)
from sdedu.course_check import main as check_setup
from sdedu.threads import cgroup_cpu_quota, learner_threads

ROOT = Path(__file__).resolve().parents[1]
START = "notebooks/00_start_here.ipynb"


def stamp(folder, version):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STAMP).write_text(json.dumps({"sdedu_version": version}))


def test_course_is_copied_once_and_a_learners_files_are_never_overwritten(tmp_path):
    folder = tmp_path / "course"
    new, kept = copy_course(folder)
    files = course_files(course_source())
    exercises = sorted(p.name for p in (folder / "exercises").glob("*.ipynb"))
    assert (folder / START).is_file() and (folder / "jupyter" / "jupyter_lab_config.py").is_file()
    assert exercises and sorted(p.name for p in (folder / "workspace").glob("*.ipynb")) == exercises
    assert len(new) == len(files) + len(exercises) and kept == 0
    assert json.loads((folder / STAMP).read_text()) == {"sdedu_version": __version__}

    (folder / START).write_text("my notes")  # a learner's edits, in a course notebook and in an exercise
    (folder / "workspace" / exercises[0]).write_text("my answer")
    (folder / "README.md").unlink()  # a deleted file comes back
    new, kept = copy_course(folder)
    assert new == [folder / "README.md"] and kept == len(files) + len(exercises) - 1
    assert (folder / START).read_text() == "my notes"
    assert (folder / "workspace" / exercises[0]).read_text() == "my answer"


@pytest.mark.parametrize(
    "found, problem, fix",
    [
        ("0.0.9", "older than this sdedu", "start the new course in a new folder"),
        ("99.0.0", "newer than this sdedu", "upgrade sdedu"),
        ("garbage", "is damaged", "delete it"),
    ],
)
def test_a_folder_of_another_release_is_refused_with_what_to_do(tmp_path, found, problem, fix):
    stamp(tmp_path, found)
    (tmp_path / "mine.txt").write_text("kept")
    with pytest.raises(CourseVersionError, match=problem) as info:
        copy_course(tmp_path)
    assert fix in str(info.value) and (found in str(info.value) or found == "garbage")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STAMP, "mine.txt"])  # nothing was copied


def test_a_patch_release_keeps_the_folder(tmp_path):
    major, minor, *_ = __version__.split(".")
    stamp(tmp_path, f"{major}.{minor}.999")
    assert check_release(tmp_path) == f"{major}.{minor}.999"


def test_cli_errors_name_the_folder_and_exit_codes_differ(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(SystemExit) as info:
        cli(["course", str(a_file), "--no-lab"])
    assert info.value.code == 2 and "argument folder" in capsys.readouterr().err
    stamp(tmp_path / "old", "0.0.1")
    with pytest.raises(SystemExit) as info:
        cli(["course", str(tmp_path / "old"), "--no-lab"])
    assert info.value.code == 1 and "sdedu 0.0.1" in capsys.readouterr().err
    assert cli(["course", str(tmp_path / "new"), "--no-lab"]) == 0
    assert "workspace" in capsys.readouterr().out and (tmp_path / "new" / START).is_file()


def test_lab_command_has_make_courses_flags(tmp_path, monkeypatch):
    monkeypatch.setattr("os.getuid", lambda: 0)
    argv, env = lab_command(tmp_path, port=9999, environ={"JUPYTER_CONFIG_PATH": "/elsewhere"})
    assert argv[1:] == ["-m", "jupyterlab", "--ip=127.0.0.1", "--allow-root", "--no-browser", "--port=9999"]
    assert env["JUPYTER_CONFIG_PATH"].split(":") == [str(tmp_path.resolve() / "jupyter"), "/elsewhere"]
    monkeypatch.setattr("os.getuid", lambda: 1000)
    argv, env = lab_command(tmp_path, environ={"DISPLAY": ":0"})
    assert "--allow-root" not in argv and "--no-browser" not in argv


def test_setup_check_passes_here_and_names_a_problem(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert check_setup(tmp_path / "course") == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[1] for line in lines[:-1]]
    assert names == ["python", "torch", "diffusers", "sdedu", "weights", "threads", "folder"], lines
    assert all(line.startswith("ok") for line in lines[:-1]) and lines[-1].startswith("all checks passed")
    stamp(tmp_path / "course", "99.0.0")
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert check_setup(tmp_path / "course") == 1
    out = capsys.readouterr().out
    assert "PROBLEM  threads    OMP_NUM_THREADS must be a positive integer; got 'lots'" in out
    assert "PROBLEM  folder" in out and "99.0.0" in out and "2 problem(s)" in out


def test_learner_threads_share_the_usable_cores():
    assert learner_threads({}, cores=8) == 8
    assert learner_threads({"SDEDU_LEARNERS": "4"}, cores=8) == 2
    assert learner_threads({"SDEDU_LEARNERS": "30"}, cores=2) == 1  # never 0
    assert learner_threads({"OMP_NUM_THREADS": "3", "SDEDU_LEARNERS": "30"}, cores=2) == 3  # a set value wins
    with pytest.raises(ValueError, match="SDEDU_LEARNERS must be a positive integer; got '0'"):
        learner_threads({"SDEDU_LEARNERS": "0"}, cores=2)


def test_cgroup_quota_of_the_container_and_of_the_process(tmp_path):
    self_cgroup = tmp_path / "self_cgroup"
    self_cgroup.write_text("0::/system.slice/jupyter-ada.service\n")
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path, self_cgroup) is None  # unlimited
    unit = tmp_path / "system.slice" / "jupyter-ada.service"
    unit.mkdir(parents=True)
    (unit / "cpu.max").write_text("150000 100000\n")  # a systemd CPUQuota=150%
    assert cgroup_cpu_quota(tmp_path, self_cgroup) == 1.5
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # a container limit of half a core: the smaller wins
    assert cgroup_cpu_quota(tmp_path, self_cgroup) == 0.5


def test_the_classroom_start_script_shares_threads_and_copies_the_course(tmp_path):
    """binder/start, run before every classroom server: thread share exported, course copied, command run."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(HOME=str(tmp_path), SDEDU_LEARNERS="1000", PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    result = subprocess.run(
        [ROOT / "binder" / "start", "env"], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    exported = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    major, minor, *_ = __version__.split(".")
    course = tmp_path / f"sdedu-course-{major}.{minor}"
    assert exported["OMP_NUM_THREADS"] == "1" and exported["MKL_NUM_THREADS"] == "1"
    assert exported["JUPYTER_CONFIG_PATH"].split(":")[0] == str(course / "jupyter")
    assert (course / START).is_file() and (course / STAMP).is_file()
