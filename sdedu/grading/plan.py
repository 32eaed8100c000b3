"""What of a submission runs, and what a teacher should look at: the plan for one notebook.

The oracle runs (`make_plan`):

- the master's setup cells (every code cell before the first solution cell), from the master, one
  top-level statement at a time (so one failing import does not take the others with it);
- then, in the submission's order, the learner's cells: the cells that hold a solution region in
  the master (matched by cell id) and the cells the learner added (`check` does nothing there:
  the judge checks). The master's check cells and demonstration cells do not run.

The answer of each item is the expression its master check cell passes to `check`.

Flags are remarks for the teacher, not verdicts (the score does not change): a learner cell that
imports the checker (`sdedu.grading`), uses the library function it was asked to write, defines
or rebinds `check`, patches what the checker relies on (torch's functions, `sys.modules`,
IPython's exception hooks), or runs code from strings.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from sdedu.grading import builder
from sdedu.grading.masters import check_items

__all__ = ["Plan", "make_plan", "LIBRARY_TWINS"]

# The library functions each exercise asks the learner to write again (module, name).
LIBRARY_TWINS = {
    "forward_diffusion": [("sdedu.diffusion", "q_sample")],
    "timestep_embedding": [("sdedu.nn.embeddings", "timestep_embedding")],
    "image_grid": [("sdedu.viz", "image_grid"), ("sdedu.viz.images", "image_grid")],
    "attention_maps": [("sdedu.attention_maps", "word_attention_maps")],
    "quantize_int8": [("sdedu.optimize.int8", "quantize_weight")],
    "benchmark_timing": [("sdedu.bench.measure", "median_time")],
    "interview_quality": [("sdedu.metrics.point_clouds", "frechet_distance")],
    "vae_sample_and_kl": [("sdedu.models.vae", "kl_divergence")],
    "sdedit_timesteps": [("sdedu.pipeline", "last_timesteps"), ("sdedu.pipeline.loop", "last_timesteps")],
    "flow_interpolate": [("sdedu.flow_matching", "interpolate")],
    "flow_velocity_target": [("sdedu.flow_matching", "velocity_target")],
    "flow_logit_normal_t": [("sdedu.flow_matching", "logit_normal_times")],
    "flow_matching_loss": [("sdedu.flow_matching", "flow_matching_loss")],
    "lora_forward": [("sdedu.nn.lora", "LoRALinear")],
    "lora_init": [("sdedu.nn.lora", "LoRALinear")],
    "watermark_statistic": [("sdedu.safety.watermark", "watermark_statistic"), ("sdedu.safety", "watermark_statistic")],
}
PATCHING = ("set_custom_exc", "sys.modules", "builtins", "setattr(torch", "torch.testing", "__code__")


@dataclass
class Plan:
    """cells: [(label, source)] to run in order.  answers: {item: expression}.  notes, flags: for the teacher."""

    cells: list[tuple[str, str]] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


def _has_solution(cell) -> bool:
    markers = builder.CODE_MARKERS if cell.cell_type == "code" else builder.MARKDOWN_MARKERS
    return cell.cell_type == "code" and any(begin in cell.source for begin in markers)


def _answer_expression(cell, item: str) -> str | None:
    try:
        tree = ast.parse(cell.source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == "check"
            and len(node.args) >= 2
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == item
        ):
            return ast.unparse(node.args[1])
    return None


def _statements(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return [source]
    return [ast.get_source_segment(source, node) for node in tree.body]


def make_plan(master, submission) -> Plan:
    """The plan for `submission` (a notebook) of `master` (its solution notebook)."""
    plan = Plan()
    master_cells = {cell.get("id"): cell for cell in master.cells}
    solution_ids = [cell.get("id") for cell in master.cells if _has_solution(cell)]
    first = next((i for i, cell in enumerate(master.cells) if _has_solution(cell)), len(master.cells))
    setup_aliases = {}
    for index, cell in enumerate(master.cells[:first]):
        if cell.cell_type == "code" and not builder.is_check_cell(cell):
            for k, statement in enumerate(_statements(cell.source)):
                plan.cells.append((f"setup cell {index}.{k}", statement))
            setup_aliases.update(_imported_names(cell.source))
    for cell in master.cells:
        if builder.is_check_cell(cell):
            for item in check_items(cell):
                expression = _answer_expression(cell, item)
                if expression is not None:
                    plan.answers[item] = expression
    submitted_ids = set()
    for index, cell in enumerate(submission.cells):
        if cell.cell_type != "code":
            continue
        cell_id = cell.get("id")
        submitted_ids.add(cell_id)
        master_cell = master_cells.get(cell_id)
        if master_cell is not None and builder.is_check_cell(master_cell):
            if master_cell.source != cell.source:
                plan.notes.append(f"cell {index} (a check cell) was edited; the grader checks with the master's check")
            continue
        if cell_id in master_cells and cell_id not in solution_ids:
            continue  # the master's own setup and demonstration cells
        plan.cells.append((f"cell {index}", cell.source))
        plan.flags += _flags(cell.source, index, setup_aliases)
    for cell_id in solution_ids:
        if cell_id not in submitted_ids:
            plan.notes.append(f"the solution cell {cell_id!r} is missing from the submission")
    return plan


def _imported_names(source: str) -> dict[str, str]:
    """{local name: 'module.name'} for `from module import name [as local]` statements."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _flags(source: str, index: int, setup_aliases: dict[str, str]) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    flags, where = set(), f"cell {index}"
    twins = {f"{module}.{name}" for pairs in LIBRARY_TWINS.values() for module, name in pairs}
    imported = _imported_names(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update({alias.asname or alias.name: alias.name for alias in node.names})
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            flags.add(f"{where} defines its own `check`")
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "check" for t in targets):
                flags.add(f"{where} rebinds `check`")
            if any(isinstance(t, ast.Attribute) and ast.unparse(t).startswith(("torch.", "sdedu.")) for t in targets):
                flags.add(f"{where} replaces a function of torch or sdedu ({ast.unparse(targets[0])})")
        if isinstance(node, ast.Name) and setup_aliases.get(node.id) in twins:
            flags.add(f"{where} uses the library's {setup_aliases[node.id]} (the function it was asked to write)")
    for qualified in imported.values():
        if qualified.startswith("sdedu.grading") or qualified == "sdedu.grading":
            flags.add(f"{where} imports the checker ({qualified})")
        if qualified in twins:
            flags.add(f"{where} imports the library's {qualified} (the function it was asked to write)")
    text = source.replace(" ", "")
    for needle in PATCHING:
        if needle.replace(" ", "") in text:
            flags.add(f"{where} touches {needle} (the checker's environment)")
    if "__import__" in text or "importlib" in text:
        flags.add(f"{where} imports modules by name (importlib / __import__)")
    if any(
        isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("exec", "eval") for node in ast.walk(tree)
    ):
        flags.add(f"{where} runs code from strings (exec / eval)")
    return sorted(flags)
