"""Every exercise notebook runs to the end, and only its check cells fail, and only as incomplete.

nbval cannot prove this (a cell tagged raises-exception that does not raise still passes), so
the notebooks are run here with nbclient, errors allowed, and every output is inspected.
"""

import os
from pathlib import Path

import nbformat
import pytest

from sdedu.grading import builder

REPO = Path(__file__).resolve().parents[1]
EXERCISES = sorted((REPO / "exercises").glob("*.ipynb"))


@pytest.mark.parametrize("path", EXERCISES, ids=[p.stem for p in EXERCISES])
def test_unsolved_exercise_runs_to_the_end_failing_only_its_checks(path):
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, "SDEDU_QUICK": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute(env=env)
    checks = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, f"cell {index} did not run"
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if builder.is_check_cell(cell):
            checks += 1
            assert [e.ename for e in errors] == ["ExerciseIncomplete"], (
                f"check cell {index} should fail with ExerciseIncomplete; got "
                f"{[(e.ename, e.evalue[:200]) for e in errors]}"
            )
            assert "raises-exception" in cell.metadata.get("tags", [])
        else:
            assert not errors, f"cell {index} (not a check cell) raised {errors[0].ename}: {errors[0].evalue[:300]}"
    assert checks >= 1
