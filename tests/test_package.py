"""The package's shape: what imports what, and how notebooks are committed."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIRS = ("notebooks", "solutions", "exercises")


def all_notebooks():
    return sorted(p for d in NOTEBOOK_DIRS for p in (ROOT / d).glob("*.ipynb"))


def test_core_maths_does_not_import_diffusers():
    """diffusers is the test oracle and the bridge, never a dependency of the core maths."""
    code = (
        "import sys, sdedu.schedules, sdedu.diffusion, sdedu.samplers, sdedu.guidance; "
        "print('diffusers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_notebooks_are_committed_without_outputs():
    dirty = []
    for path in all_notebooks():
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
                dirty.append(path.relative_to(ROOT).as_posix())
                break
    assert not dirty, f"notebooks with outputs (run `make strip`): {dirty}"


def test_course_notebooks_are_numbered_and_open_with_markdown():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks, "notebooks/ is empty"
    for path in notebooks:
        number, _, topic = path.stem.partition("_")
        assert number.isdigit() and len(number) == 2 and topic, f"{path.name} is not named NN_topic.ipynb"
        first = json.loads(path.read_text())["cells"][0]
        assert first["cell_type"] == "markdown", f"{path.name} must open with a Markdown cell"
    numbers = [p.stem[:2] for p in notebooks]
    assert len(numbers) == len(set(numbers)), f"two notebooks share a number: {numbers}"
