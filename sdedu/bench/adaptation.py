"""Control and adaptation (issue 18): what a negative prompt does, read off by the course judge.

adaptation  "a large shape in the center", 64 images (16 quick) with the empty caption in the
            unconditional branch and 64 with negative_prompt "red" (the same seeds): the share
            of images the judge reads as red, and the prompt's own adherence (size, position)
            with the negative prompt (it should not suffer).

A negative prompt replaces "" in classifier-free guidance,
    eps = eps(z, c_neg) + w (eps(z, c) - eps(z, c_neg)),
so the guided step points away from c_neg as well as towards c (diffusers' `negative_prompt`).
"""

from __future__ import annotations

from sdedu import metrics
from sdedu.bench.adapt_control import control_rows
from sdedu.bench.adapt_style import knowledge_rows, sdedit_style_rows, style_lora_rows
from sdedu.bench.adapt_teach import teach_rows
from sdedu.bench.report import Context, Row

PROMPT = "a large shape in the center"
NEGATIVE = "red"


def adaptation_section(ctx: Context) -> list[Row]:
    """The share of red images without and with negative_prompt "red" (same prompts, same seeds)."""
    n = ctx.n(64, 16)
    prompts = [PROMPT] * n
    shares, adherence, counts = {}, {}, {}
    for name, negative in (("without", None), ("with", NEGATIVE)):
        verdicts = metrics.judge(ctx.generate(prompts, negative_prompt=negative))
        colors = metrics.diversity(verdicts, "color")
        shares[name], counts[name] = colors["fractions"].get(NEGATIVE, 0.0), colors["counts"]
        adherence[name] = metrics.adherence(verdicts, prompts)["all"]
    section = "adaptation"
    label = f'"{PROMPT}": share {NEGATIVE}'
    rows = [
        Row(section, f"{label}, no negative prompt", shares["without"], extra={"n": n, "colors": counts["without"]}),
        Row(
            section,
            f'{label}, negative_prompt "{NEGATIVE}"',
            shares["with"],
            target=f"< {shares['without']:.3g} (without)",
            passed=shares["with"] < shares["without"],
            extra={"n": n, "colors": counts["with"]},
        ),
        Row(section, f'"{PROMPT}": size and position, no negative prompt', adherence["without"], extra={"n": n}),
        Row(section, f'"{PROMPT}": size and position, negative_prompt "{NEGATIVE}"', adherence["with"]),
    ]
    rows += knowledge_rows(ctx)
    rows += sdedit_style_rows(ctx)
    rows += control_rows(ctx)
    rows += teach_rows(ctx)
    rows += style_lora_rows(ctx)
    return rows
