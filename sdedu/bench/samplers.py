"""Samplers as ODE solvers (issue 16.8): every registered sampler at equal network evaluations.

samplers   for each name in `sdedu.pipeline.SAMPLERS`: seconds for a batch and adherence (all four
           attributes, the judge) at the same budget of network evaluations (NFE: one UNet call per
           entry of `sampler.timesteps`, guided branches batched; Heun makes two per step), timed
           interleaved in one run; adherence again at a small budget (4 NFE), where samplers differ;
           then the fewest NFE at which DDIM and DPM-Solver++(2M) reach 98% all-four adherence, and
           the target that DPM-Solver++(2M) needs no more than DDIM.
"""

from __future__ import annotations

import math

from sdedu.bench.common import IMAGES, adherence_of, bench_row, is_trained, sample_prompts
from sdedu.bench.measure import interleaved_times
from sdedu.pipeline import SAMPLERS, make_sampler

#: All-four adherence that counts as "reached" for the fewest-NFE rows (issue 16's "Done when").
ADHERENCE_TARGET = 0.98
#: The pair compared at the target: the fast solver and the one it must not lose to.
FAST, BASELINE = "dpmpp_2m", "ddim"


def steps_for_nfe(pipe, name: str, nfe: int) -> tuple[int, int]:
    """(steps, evaluations): the most steps of sampler `name` that make at most `nfe` network evaluations."""
    sampler = make_sampler(name, pipe.schedule)
    for steps in range(nfe, 0, -1):
        try:
            sampler.set_timesteps(steps)
        except ValueError:  # a step count the sampler refuses (DDIM: n = T with its offset)
            continue
        if len(sampler.timesteps) <= nfe:
            return steps, len(sampler.timesteps)
    raise ValueError(f"nfe must allow one step of sampler {name!r}; got nfe={nfe}")


def fewest_nfe(pipe, name: str, budgets, n: int, seed: int) -> tuple[float, dict]:
    """The first budget in `budgets` (ascending) at which `name` reaches ADHERENCE_TARGET, or inf; all scores."""
    scores = {}
    for nfe in budgets:
        steps, _ = steps_for_nfe(pipe, name, nfe)
        scores[nfe] = adherence_of(pipe, n, seed=seed, sampler=name, steps=steps)["all"]
        if scores[nfe] >= ADHERENCE_TARGET:
            return float(nfe), scores
    return math.inf, scores


def samplers_section(ctx) -> list:
    """Seconds and adherence per sampler at equal NFE; the fewest NFE to 98% all-four for DDIM and DPM++(2M)."""
    pipe = ctx.pipe
    nfe = ctx.n(25, 10)
    n_images, n_judged = ctx.n(IMAGES, 4), ctx.n(200, 8)
    prompts = sample_prompts(n_images)[0]
    steps = {name: steps_for_nfe(pipe, name, nfe) for name in SAMPLERS}  # name -> (steps, evaluations)

    def run(name):
        return lambda: pipe(prompts, num_inference_steps=steps[name][0], sampler=name, seed=ctx.seed)

    seconds = interleaved_times({name: run(name) for name in SAMPLERS}, ctx.n(5, 2), 1, ctx.device)
    trained = is_trained(pipe)
    rows = []
    for name in SAMPLERS:
        n_steps, evaluations = steps[name]
        label = f"{name} {n_steps} steps ({evaluations} NFE)"
        extra = {"steps": n_steps, "nfe": evaluations, "images": n_images}
        rows.append(bench_row("samplers", f"{label}: {n_images} images", seconds[name], unit="s", **extra))
    for budget in (nfe, ctx.n(4, 2)) if trained else ():
        for name in SAMPLERS:
            n_steps, evaluations = steps_for_nfe(pipe, name, budget)
            detail = adherence_of(pipe, n_judged, seed=ctx.seed, sampler=name, steps=n_steps)
            label = f"{name} {n_steps} steps ({evaluations} NFE): adherence (all four)"
            rows.append(bench_row("samplers", label, detail["all"], steps=n_steps, nfe=evaluations, n=n_judged))
    if not trained or FAST not in SAMPLERS or BASELINE not in SAMPLERS:
        return rows  # adherence means nothing on random weights; the target needs both samplers
    budgets = ctx.n((1, 2, 3, 4, 6, 8, 10, 15, 20, 25, 30, 40, 50), (2, 4))
    fewest = {}
    for name in (BASELINE, FAST):
        fewest[name], scores = fewest_nfe(pipe, name, budgets, n_judged, ctx.seed)
        metric = f"{name}: fewest NFE to {ADHERENCE_TARGET:.0%} all four"
        rows.append(bench_row("samplers", metric, fewest[name], n=n_judged, adherence_by_nfe=scores))
    reached = math.isfinite(fewest[FAST]) and fewest[FAST] <= fewest[BASELINE]
    rows.append(
        bench_row(
            "samplers",
            f"fewest NFE to {ADHERENCE_TARGET:.0%}: {FAST} / {BASELINE}",
            fewest[FAST] / fewest[BASELINE] if math.isfinite(fewest[BASELINE]) else 0.0,
            "<= 1",
            reached,
            "x",
            fast=fewest[FAST],
            baseline=fewest[BASELINE],
        )
    )
    return rows
