"""The checker's mechanics, the exercise builder, and the grader's pieces (no kernels here)."""

import threading
import time
from pathlib import Path

import nbformat
import pytest
import torch

from sdedu.grading import (
    ExerciseFailed,
    ExerciseIncomplete,
    builder,
    check,
    grader,
    item_ids,
    masters,
    plan,
    reports,
    when_implemented,
)
from sdedu.grading.calling import is_stub
from sdedu.grading.catalogue import ITEMS
from sdedu.grading.checks_diffusion import forward_reference, reverse_reference
from sdedu.schedules import NoiseSchedule

REPO = Path(__file__).resolve().parents[1]


def good_q_sample(x0, t, alpha_bar, noise):
    ab = alpha_bar[t].reshape(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def stub_q_sample(x0, t, alpha_bar, noise):
    """A stub, as the builder writes it."""
    # YOUR CODE HERE
    raise NotImplementedError()


# ---- the checker ------------------------------------------------------------------------------


def test_success_prints_one_line(capsys):
    check("forward_diffusion", good_q_sample)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("\u2714 forward_diffusion: passed")


def test_stub_and_ellipsis_are_incomplete():
    with pytest.raises(ExerciseIncomplete, match="not implemented yet"):
        check("forward_diffusion", stub_q_sample)
    with pytest.raises(ExerciseIncomplete, match="no answer yet"):
        check("interview_architecture", ...)
    assert issubclass(ExerciseIncomplete, AssertionError) and issubclass(ExerciseFailed, AssertionError)
    assert is_stub(stub_q_sample) and not is_stub(good_q_sample)


def test_unknown_id_lists_the_valid_ones():
    with pytest.raises(ValueError, match="forward_diffusion") as info:
        check("forward_difusion", good_q_sample)
    assert "interview_minimal_code" in str(info.value)


def test_a_torch_not_implemented_error_is_a_failure_not_a_stub():
    def uses_missing_op(x0, t, alpha_bar, noise):
        raise NotImplementedError("the op 'foo' is not implemented for 'Half'")

    with pytest.raises(ExerciseFailed, match="raised NotImplementedError"):
        check("forward_diffusion", uses_missing_op)


def test_failure_names_the_case_expected_got_and_a_hint():
    def no_sqrt(x0, t, alpha_bar, noise):
        ab = alpha_bar[t].reshape(-1, 1, 1, 1)
        return ab * x0 + (1 - ab) * noise

    with pytest.raises(ExerciseFailed) as info:
        check("forward_diffusion", no_sqrt)
    message = str(info.value)
    assert "case 1" in message and "expected" in message and "got" in message
    assert "(1, 3, 4, 4)" in message and "float32" in message
    assert "Hint:" in message and "square root" in message


@pytest.mark.parametrize(
    "bad, keyword",
    [
        (lambda x0, t, a, n: (x0,), "tuple"),
        (lambda x0, t, a, n: x0.numpy(), "torch.Tensor"),
        (lambda x0, t, a, n: None, "return"),
        (lambda x0, t, a, n: (a[t].reshape(-1, 1, 1, 1) - 2).sqrt() * x0, "NaN"),
        (lambda x0, t, a, n: x0.mul_(1.0 + 1e-3), "in place"),
        (lambda x0, t, a, n: (_ for _ in ()).throw(ValueError("oops")), "raised ValueError"),
        (lambda x0, t, a, n: good_q_sample(x0.double(), t, a, n), "dtype"),
        ("not a function", "expected a function"),
    ],
)
def test_learner_misbehaviour_is_reported(bad, keyword):
    with pytest.raises(ExerciseFailed, match=keyword):
        check("forward_diffusion", bad)


def test_a_hanging_function_is_stopped_even_if_it_catches_exceptions():
    def hangs(x0, t, alpha_bar, noise):
        try:
            while True:
                pass
        except Exception:
            return x0

    start = time.monotonic()
    with pytest.raises(ExerciseFailed, match="did not return within 0.5 s"):
        check("forward_diffusion", hangs, time_limit=0.5)
    assert time.monotonic() - start < 10


def test_the_time_limit_also_works_off_the_main_thread():
    stop = threading.Event()

    def hangs(x0, t, alpha_bar, noise):
        while not stop.is_set():
            time.sleep(0.01)

    errors = []

    def run():
        try:
            check("forward_diffusion", hangs, time_limit=0.5)
        except ExerciseFailed as err:
            errors.append(str(err))

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(20)
    stop.set()
    assert errors and "did not return" in errors[0]


def test_checks_leave_the_global_random_state_alone():
    import torch.nn.functional as F

    def training_step(model, x0, alpha_bar, optimizer, generator=None):  # draws from the global RNG
        t = torch.randint(0, alpha_bar.shape[0], (x0.shape[0],))
        noise = torch.randn(x0.shape)
        ab = alpha_bar[t].reshape(-1, 1)
        loss = F.mse_loss(model(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check("training_step", training_step)
    assert torch.equal(torch.rand(3), expected)


def test_when_implemented_swallows_only_not_implemented(capsys):
    with when_implemented():
        raise NotImplementedError()
    assert "not written yet" in capsys.readouterr().out
    with pytest.raises(ValueError):
        with when_implemented():
            raise ValueError("a real bug")


def test_references_agree_with_the_library():
    from sdedu.diffusion import predict_x0_from_eps, q_posterior, q_sample

    schedule = NoiseSchedule.linear(1000)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    t = torch.tensor([0, 500, 999])
    torch.testing.assert_close(
        forward_reference(x0, t, schedule.alpha_bar, noise), q_sample(x0, t, schedule, noise=noise)
    )
    # The DDPM mean is the posterior mean at the predicted x_0 (Ho et al. eq. 11 = eq. 7 with eq. 15).
    for step in (0, 1, 500, 999):
        x_t, eps = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
        x0_pred = predict_x0_from_eps(x_t, eps, step, schedule)
        mean, _ = q_posterior(x0_pred, x_t, step, schedule)
        got = reverse_reference(x_t, step, eps, schedule.betas, schedule.alpha_bar, torch.zeros_like(x_t))
        torch.testing.assert_close(got, mean, atol=1e-4, rtol=1e-4)


def test_every_item_is_documented_and_has_a_check_cell():
    ids = item_ids()
    assert len(ids) == len(set(ids)) and len(ids) >= 19
    docs = (REPO / "docs" / "GRADING.md").read_text()
    checked = {}
    for path in sorted((REPO / "solutions").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if builder.is_check_cell(cell):
                for item in masters.check_items(cell):
                    checked[item] = path.stem
    for item in ids:
        assert f"`{item}`" in docs, f"{item} is not listed in docs/GRADING.md"
        assert checked.get(item) == ITEMS[item].notebook, (
            f"{item} has no check cell in solutions/{ITEMS[item].notebook}"
        )


# ---- the builder ------------------------------------------------------------------------------


def test_strip_regions_keeps_indentation_and_signature():
    source = 'def f(x):\n    """Doc."""\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n    ### END SOLUTION\n'
    out, removed = builder.strip_regions(source, builder.CODE_MARKERS)
    assert out == 'def f(x):\n    """Doc."""\n    # YOUR CODE HERE\n    raise NotImplementedError()\n'
    assert removed == ["    y = x + 1\n    return y"]
    out, _ = builder.strip_regions("a = ...\n### BEGIN ANSWER\na = 3\n### END ANSWER", builder.CODE_MARKERS)
    assert out == "a = ...\n# YOUR ANSWER HERE"
    out, _ = builder.strip_regions(
        "**A.**\n<!-- BEGIN SOLUTION -->\nsecret\n<!-- END SOLUTION -->", builder.MARKDOWN_MARKERS
    )
    assert out == "**A.**\nYOUR ANSWER HERE"


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
        ("x = 1\n### END SOLUTION\n", "no matching"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "inside another"),
    ],
)
def test_strip_regions_rejects_broken_markers(source, message):
    with pytest.raises(ValueError, match=message):
        builder.strip_regions(source, builder.CODE_MARKERS, "nb, cell 3")


def _toy_solution():
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    cells = [
        new_markdown_cell("Intro\n<!-- BEGIN SOLUTION -->\nthe model answer\n<!-- END SOLUTION -->"),
        new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return x * 42\n    ### END SOLUTION"),
        new_code_cell('check("forward_diffusion", f)'),
        new_markdown_cell("teacher notes"),
    ]
    cells[3].metadata["tags"] = ["solution-only"]
    cells[1].outputs = [nbformat.v4.new_output("stream", text="x")]
    cells[1].execution_count = 3
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i}"
    return new_notebook(cells=cells)


def test_make_exercise():
    solution = _toy_solution()
    before = nbformat.writes(solution)
    exercise = builder.make_exercise(solution, "01_toy")
    assert nbformat.writes(solution) == before  # the master is not changed
    assert [c.id for c in exercise.cells] == ["cell-0", "cell-1", "cell-2"]
    assert "the model answer" not in exercise.cells[0].source and "YOUR ANSWER HERE" in exercise.cells[0].source
    assert "42" not in exercise.cells[1].source and "raise NotImplementedError()" in exercise.cells[1].source
    assert exercise.cells[1].outputs == [] and exercise.cells[1].execution_count is None
    assert exercise.cells[2].metadata["tags"] == ["raises-exception"]
    assert exercise.metadata["sdedu"]["exercise"] == "01_toy"


def test_build_and_stale(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbformat.write(_toy_solution(), solutions / "01_toy.ipynb")
    assert builder.stale(solutions, exercises) == ["01_toy.ipynb (missing)"]
    exercises.mkdir()
    (exercises / "99_old.ipynb").write_text("{}")
    builder.build(solutions, exercises)
    assert sorted(p.name for p in exercises.iterdir()) == ["01_toy.ipynb"]
    assert builder.stale(solutions, exercises) == []
    (exercises / "01_toy.ipynb").write_text(
        (exercises / "01_toy.ipynb").read_text().replace("YOUR CODE HERE", "edited")
    )
    assert builder.stale(solutions, exercises) == ["01_toy.ipynb (out of date)"]
    from sdedu.grading.__main__ import main

    assert main(["check-stale", "--solutions", str(solutions), "--exercises", str(exercises)]) == 1
    assert main(["build", "--solutions", str(solutions), "--exercises", str(exercises)]) == 0
    assert main(["check-stale", "--solutions", str(solutions), "--exercises", str(exercises)]) == 0


def test_exercises_folder_is_up_to_date():
    assert builder.stale() == [], "exercises/ is stale: run `python -m sdedu.grading build`"


def test_no_solution_text_leaks_into_exercises():
    for path in sorted((REPO / "solutions").glob("*.ipynb")):
        solution = nbformat.read(path, as_version=4)
        exercise_text = (REPO / "exercises" / path.name).read_text()
        assert "BEGIN SOLUTION" not in exercise_text and "BEGIN ANSWER" not in exercise_text
        # Lines that also appear outside the regions (a blank line, `return x`) are not secrets.
        public = "\n".join(
            builder.make_exercise(solution, path.stem).cells[i].source
            for i in range(len(builder.make_exercise(solution, path.stem).cells))
        )
        exercise = nbformat.read(REPO / "exercises" / path.name, as_version=4)
        sources = "\n".join(cell.source for cell in exercise.cells)
        for region in builder.solution_texts(solution):
            for line in region.splitlines():
                secret = line.strip()
                if len(secret) >= 8 and not secret.startswith("#") and secret not in public:
                    assert secret not in sources, f"{path.name}: solution line leaks into the exercise: {secret!r}"


def test_notebooks_are_committed_without_outputs():
    for folder in ("solutions", "exercises"):
        for path in sorted((REPO / folder).glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            for cell in nb.cells:
                if cell.cell_type == "code":
                    assert cell.outputs == [] and cell.execution_count is None, f"{folder}/{path.name} has outputs"


# ---- the grader's pieces ------------------------------------------------------------------------


def test_identify_by_metadata_name_or_number(tmp_path):
    stems = [p.stem for p in (REPO / "solutions").glob("*.ipynb")]
    exercise = nbformat.read(REPO / "exercises" / "01_forward_diffusion.ipynb", as_version=4)
    assert masters.identify(exercise, tmp_path / "whatever.ipynb", stems) == "01_forward_diffusion"
    bare = nbformat.v4.new_notebook()
    assert masters.identify(bare, tmp_path / "alice_04_training.ipynb", stems) == "04_training"
    assert masters.identify(bare, tmp_path / "02_mine.ipynb", stems) == "02_reverse_diffusion"
    assert masters.identify(bare, tmp_path / "homework.ipynb", stems) is None


def test_plan_runs_setup_from_the_master_and_only_the_learners_solution_and_added_cells():
    from nbformat.v4 import new_code_cell

    master = nbformat.read(REPO / "solutions" / "04_training.ipynb", as_version=4)
    submission = nbformat.read(REPO / "exercises" / "04_training.ipynb", as_version=4)
    ids = [c.id for c in submission.cells]
    submission.cells[ids.index("check-training-step")].source = 'print("\u2714 training_step: passed")'
    submission.cells[ids.index("04-02")].source = "import os; os.remove('x')"  # a setup cell: the master's runs
    submission.cells.insert(1, new_code_cell("from sdedu.grading import checker\ncheck = print"))
    the_plan = plan.make_plan(master, submission)
    sources = [source for _, source in the_plan.cells]
    assert not any("os.remove" in s or "print(" in s for s in sources)
    assert "import torch" in sources[0] and any("def training_step" in s for s in sources)
    assert any("check = print" in s for s in sources)  # an added cell runs (in the sandbox) ...
    assert any("imports the checker" in f for f in the_plan.flags)  # ... and is flagged
    assert any("rebinds `check`" in f for f in the_plan.flags)
    assert the_plan.answers == {"training_step": "training_step", "training_loop": "train"}
    assert any("was edited" in note for note in the_plan.notes)


def test_reports_are_written_atomically_and_sorted(tmp_path):
    result = reports.ItemResult("x", 0.5, 1, ("passed", 1.0, ""), ("failed", 0.5, "case 2: wrong"))
    later = reports.Report("b/01.ipynb", "01_forward_diffusion", items=[result])
    earlier = reports.Report("a/01.ipynb", None, status="not graded")
    out = tmp_path / "grades.csv"
    reports.write_tables(out, [later, earlier], [{"submission": "old.ipynb", "item": "x", "points": "1", "max": "1"}])
    lines = out.read_text().splitlines()
    assert lines == [
        "submission,item,points,max",
        "a/01.ipynb,(not graded),0,0",
        "b/01.ipynb,x,0.5,1",
        "old.ipynb,x,1,1",
    ]
    wide = (tmp_path / "grades_wide.csv").read_text().splitlines()
    assert wide[0] == "submission,exercise,status,x,total,max,flags" and wide[2].startswith("b/01.ipynb,01_forward")
    book = (tmp_path / "grades_gradebook.csv").read_text().splitlines()
    assert book[0] == "Student,ID,SIS User ID,Section,01_forward_diffusion" and book[2] == "b,,b,,0.5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grades.csv", "grades_gradebook.csv", "grades_wide.csv"]
    reports.write_report(later, tmp_path / "fb")
    assert reports.read_reports(tmp_path / "fb")[0] == reports.Report.from_dict(
        {**reports.asdict(later), "seconds": 0.0}
    )
    assert "case 2: wrong" in (tmp_path / "fb" / "b__01.html").read_text()


def test_feedback_names_are_unique_per_path():
    assert reports.feedback_name(Path("alice/01_forward_diffusion.ipynb")) != reports.feedback_name(
        Path("bob/01_forward_diffusion.ipynb")
    )


def test_a_trial_scores_every_case_when_grading_and_stops_at_the_first_in_a_notebook():
    from sdedu.grading.trial import Trial

    def wrong_at_t0(x0, t, alpha_bar, noise):
        ab = alpha_bar[t].reshape(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise + (t == 0).float().reshape(-1, 1, 1, 1)

    trial = Trial(partial=True)
    ITEMS["forward_diffusion"].run(wrong_at_t0, trial)
    assert [message is None for _, message in trial.cases] == [True, False, False, True]
    with pytest.raises(ExerciseFailed):
        ITEMS["forward_diffusion"].run(wrong_at_t0, Trial())
    public, hidden = Trial().generator(0), Trial(seed=3).generator(0)
    assert not torch.equal(torch.rand(4, generator=public), torch.rand(4, generator=hidden))


def test_grade_command_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        grader.main([str(tmp_path / "missing.ipynb"), "--out", str(tmp_path / "g.csv")])
    assert info.value.code == 2 and "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        grader.main([str(tmp_path), "--call-timeout", "0"])
    with pytest.raises(SystemExit):
        grader.main([str(tmp_path), "--shard", "3/2"])
