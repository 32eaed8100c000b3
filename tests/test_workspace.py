"""A learner's answers live in workspace/, where no build, update or `git pull` overwrites them.

`make course` copies exercises/ into the git-ignored workspace/ (sdedu.workspace) once per file;
`make exercises` (sdedu.grading's builder) rewrites exercises/ only.
"""

import re
import shutil
import subprocess

import pytest

from sdedu.grading import builder
from sdedu.workspace import ROOT, copy_new_exercises, main

EDITED = "# my answer, typed in JupyterLab\n"


def edit(path):
    path.write_text(path.read_text(encoding="utf-8") + EDITED, encoding="utf-8")


def test_building_exercises_and_copying_again_never_overwrite_an_edited_workspace_file(tmp_path):
    exercises, workspace = tmp_path / "exercises", tmp_path / "workspace"
    built = builder.build(builder.SOLUTIONS_DIR, exercises)  # what `make exercises` does, into a temporary folder
    first = copy_new_exercises(exercises, workspace)
    assert sorted(p.name for p in first) == sorted(p.name for p in built) and first
    mine = workspace / first[0].name
    edit(mine)
    answer = mine.read_text(encoding="utf-8")

    (exercises / mine.name).write_text("{}", encoding="utf-8")  # the exercise changes upstream (a pull) ...
    builder.build(builder.SOLUTIONS_DIR, exercises)  # ... and is rebuilt
    assert copy_new_exercises(exercises, workspace) == []  # `make course` again: nothing to copy
    assert mine.read_text(encoding="utf-8") == answer


def test_an_exercise_added_later_is_copied_and_a_deleted_copy_comes_back_fresh(tmp_path):
    exercises, workspace = tmp_path / "exercises", tmp_path / "workspace"
    exercises.mkdir()
    (exercises / "01_a.ipynb").write_text("one", encoding="utf-8")
    assert [p.name for p in copy_new_exercises(exercises, workspace)] == ["01_a.ipynb"]
    (exercises / "02_b.ipynb").write_text("two", encoding="utf-8")  # a new exercise arrives with an update
    assert [p.name for p in copy_new_exercises(exercises, workspace)] == ["02_b.ipynb"]
    (workspace / "01_a.ipynb").unlink()  # the learner wants a clean copy of exercise 01
    assert [p.name for p in copy_new_exercises(exercises, workspace)] == ["01_a.ipynb"]
    assert (workspace / "01_a.ipynb").read_text(encoding="utf-8") == "one"


def test_the_command_line_reports_and_refuses_a_missing_exercises_folder(tmp_path, capsys):
    exercises = tmp_path / "exercises"
    exercises.mkdir()
    (exercises / "01_a.ipynb").write_text("one", encoding="utf-8")
    assert main(["--exercises", str(exercises), "--workspace", str(tmp_path / "ws")]) == 0
    assert "1 new, 0 kept" in capsys.readouterr().out
    assert main(["--exercises", str(exercises), "--workspace", str(tmp_path / "ws")]) == 0
    assert "0 new, 1 kept" in capsys.readouterr().out
    assert main(["--exercises", str(tmp_path / "nope"), "--workspace", str(tmp_path / "ws")]) == 2
    assert "exercises_dir must be a folder" in capsys.readouterr().err


def test_git_ignores_the_workspace_so_a_pull_never_touches_it():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    probe = subprocess.run(
        ["git", "check-ignore", "-q", "workspace/01_forward_diffusion.ipynb"], cwd=ROOT, capture_output=True
    )
    assert probe.returncode == 0, "workspace/ must be listed in .gitignore"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_course_fills_the_workspace_and_make_exercises_does_not_touch_it():
    def commands(target):
        dry_run = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert dry_run.returncode == 0, dry_run.stderr
        return dry_run.stdout

    course = commands("course")
    assert "-m sdedu.workspace --exercises exercises --workspace workspace" in course
    assert re.search(r'JUPYTER_CONFIG_PATH="[^"]*/jupyter[":].*/jupyter lab ', course), course
    assert "workspace" not in commands("exercises")
