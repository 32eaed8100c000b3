"""Packaging beyond what pyproject.toml can say: the course itself travels inside the wheel.

A learner who runs `pip install sdedu` gets no git clone, so the wheel carries the course: the
folders in COURSE are copied into `sdedu/course_files/` of the build (never into the source tree),
where `sdedu course DIR` finds them and copies them into the learner's folder (sdedu/course.py).
An editable install (`pip install -e .`, `make setup`) copies nothing: there the clone itself is
the course. Everything else (name, dependencies, the shipped weights as package data) is in
pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# What a learner's course folder holds: the notebooks, the exercises and their solved masters, the docs
# the notebooks link to, the JupyterLab configuration `sdedu course` starts with, and the README.
COURSE = ("notebooks", "exercises", "solutions", "docs", "jupyter", "README.md")


class BuildPyWithCourse(build_py):
    """build_py, then the course folders copied into <build>/sdedu/course_files (outputs stripped by git already)."""

    def run(self):
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "sdedu" / "course_files"
        shutil.rmtree(target, ignore_errors=True)
        ignore = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.pyc")
        for name in COURSE:
            source = HERE / name
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=ignore)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildPyWithCourse})
