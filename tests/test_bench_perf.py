"""The performance sections of the benchmark, in quick form on a tiny random pipeline.

Only that they run and report sane, consistent figures: the figures themselves belong to
`python -m sdedu.bench`, never to an assertion.
"""

import math

import pytest
import torch

from sdedu import bench
from sdedu.bench import common, measure, roofline, samplers, vs_diffusers
from sdedu.models.unet import UNetConfig
from sdedu.pipeline import SAMPLERS, TinyStableDiffusion, make_sampler


@pytest.fixture(scope="module")
def ctx():
    pipe = common.random_pipeline("tiny", T=100)  # DDPM "with all T steps" is then 100 steps
    return bench.Context(pipe=pipe, quick=True, device=torch.device("cpu"))


def by_metric(rows):
    return {row.metric: row for row in rows}


def check_rows(rows, section):
    assert rows and all(row.section == section for row in rows)
    for row in rows:
        assert math.isfinite(row.value), row
        if row.target:
            assert isinstance(row.passed, bool), row


def test_sections_are_registered_in_the_benchmark():
    names = [bench.section_name(s) for s in bench.SECTIONS]
    for section in bench.PERFORMANCE_SECTIONS:
        assert bench.section_name(section) in names


def test_unet_vs_diffusers(ctx):
    rows = bench.unet_vs_diffusers_section(ctx)
    check_rows(rows, "unet")
    step = rows[0]
    assert step.value > 0 and step.extra["sdedu_gflop"] > 0
    # diffusers' nearest config has more ResBlocks and a wider feed-forward: more parameters and FLOPs
    assert step.extra["diffusers_params"] > step.extra["sdedu_params"]
    assert step.extra["diffusers_gflop"] > step.extra["sdedu_gflop"]


def test_block_pairs_take_and_give_the_same_shapes():
    from sdedu.models.unet import UNetConfig

    config = UNetConfig(channels=(32, 64), context_dim=32, head_dim=16, norm_groups=8)
    with torch.no_grad():
        for name, ours, theirs in vs_diffusers._block_pairs(config, batch_size=2, device="cpu"):
            assert ours().shape == theirs().shape, name


def test_sampler_overhead_same_latents_as_diffusers(ctx):
    rows = by_metric(bench.sampler_overhead_section(ctx))
    check_rows(list(rows.values()), "sampler")
    assert rows["same final latents: max |sdedu - diffusers|"].passed


def test_ddim_vs_ddpm_uses_all_T_steps(ctx):
    rows = bench.ddim_vs_ddpm_section(ctx)
    check_rows(rows, "ddim_ddpm")
    metrics = [row.metric for row in rows]
    assert any(m.startswith("DDPM-100:") for m in metrics)
    ratio = by_metric(rows)["DDPM-100 time / DDIM-25 time"].value
    assert ratio > 1  # 100 UNet calls against 25


def test_samplers_section_times_every_sampler_at_equal_nfe(ctx):
    """Random weights: one timing row per registered sampler, each within the same NFE budget (no adherence)."""
    rows = bench.samplers_section(ctx)
    check_rows(rows, "samplers")
    assert [row.metric.split(" ")[0] for row in rows] == list(SAMPLERS)
    for row in rows:
        assert row.unit == "s" and row.value > 0
        assert set(row.extra) == {"steps", "nfe", "images"}
        assert 0 < row.extra["nfe"] <= 10 and row.extra["steps"] <= row.extra["nfe"]


@pytest.mark.parametrize("name", SAMPLERS)
def test_steps_for_nfe_is_the_most_steps_within_the_budget(ctx, name):
    steps, nfe = samplers.steps_for_nfe(ctx.pipe, name, 10)
    sampler = make_sampler(name, ctx.pipe.schedule)
    sampler.set_timesteps(steps)
    assert len(sampler.timesteps) == nfe <= 10
    sampler.set_timesteps(steps + 1)
    assert len(sampler.timesteps) > 10


def test_samplers_section_on_the_shipped_model_reports_adherence_and_the_target():
    pipe = TinyStableDiffusion.from_pretrained()
    rows = bench.samplers_section(bench.Context(pipe=pipe, quick=True, device=torch.device("cpu")))
    assert all(row.section == "samplers" for row in rows)
    adherence = [row for row in rows if row.metric.endswith("adherence (all four)")]
    assert [row.metric.split(" ")[0] for row in adherence] == list(SAMPLERS) * 2  # at 10 NFE, then at 2
    assert [row.extra["nfe"] <= 10 for row in adherence] == [True] * len(adherence)
    assert [row.extra["nfe"] <= 2 for row in adherence[len(SAMPLERS) :]] == [True] * len(SAMPLERS)
    assert all(0 <= row.value <= 1 and row.extra["n"] == 8 for row in adherence)
    if {"ddim", "dpmpp_2m"} <= set(SAMPLERS):
        fewest = [row for row in rows if "fewest NFE" in row.metric]
        assert [row.metric.split(":")[0] for row in fewest[:2]] == ["ddim", "dpmpp_2m"]
        assert all(row.extra["adherence_by_nfe"] for row in fewest[:2])
        assert fewest[2].target == "<= 1" and isinstance(fewest[2].passed, bool)


def test_generating_in_batches_equals_one_call(ctx):
    """Image k has seed seed + k whatever the batching (one noise stream per image)."""
    prompts = ["a red circle", "a square", "a blue shape"]
    torch.testing.assert_close(
        ctx.generate(prompts, batch_size=2), ctx.pipe(prompts, num_inference_steps=bench.STEPS, seed=ctx.seed)
    )


def test_latent_vs_pixel(ctx):
    rows = by_metric(bench.latent_vs_pixel_section(ctx))
    check_rows(list(rows.values()), "latent")
    assert rows["training step: pixel / latent"].value > 1  # 16x the positions, 1024-token attention


def test_precision_sizes_and_best_variant(ctx):
    rows = bench.precision_section(ctx)
    check_rows(rows, "precision")
    table = by_metric(rows)
    assert 0.2 < table["int8 weights: UNet size / fp32"].value < 0.35
    pruned = next(row for row in rows if row.metric.startswith("pruned 30%:") and row.unit == "s")
    assert abs(pruned.extra["sparsity"] - 0.3) < 0.01
    assert any(row.metric.startswith("best that keeps adherence") for row in rows)


def test_roofline_and_scaling(ctx):
    rows = bench.roofline_section(ctx)
    check_rows(rows, "roofline")
    mmdit = [row for row in rows if "MM-DiT" in row.metric]
    peak, eager, best, layers, *wider = [row for row in rows if row not in mmdit]  # quick mode: no compiled variant
    assert peak.unit == "GFLOP/s" and peak.value > 0 and 0 < eager.value
    assert best.metric.startswith("best UNet forward (eager)") and best.value == eager.value and best.target
    # the convolutions and linear layers alone: fewer FLOPs than the whole forward (no attention products)
    assert "in sequence" in layers.metric and 0 < layers.extra["gflop"] < eager.extra["gflop"]
    # the wider UNets: each wider than the last, more FLOPs, and no target (they are not the shipped model)
    widths = [eager.extra["channels"]] + [row.extra["channels"] for row in wider]
    assert len(wider) == len(roofline.WIDTH_FACTORS) and widths == sorted(widths)
    assert len({tuple(w) for w in widths}) == len(widths)
    gflops = [eager.extra["gflop"]] + [row.extra["gflop"] for row in wider]
    assert gflops == sorted(gflops) and not any(row.target for row in wider)
    # the MM-DiT (quick: small, eager only, no target): its fraction, the best variant, where the time goes
    forward, best_mmdit, shares = mmdit
    assert forward.extra["compiled"] is False and forward.extra["threads"] == torch.get_num_threads()
    assert 0 < forward.value == best_mmdit.value and not best_mmdit.target
    kinds = shares.extra
    assert set(roofline.OPERATOR_KINDS) < set(kinds) and math.isclose(sum(kinds.values()), 1.0)
    assert shares.value == kinds["matrix products"] > 0
    scaling = bench.scaling_section(ctx)
    check_rows(scaling, "scaling")
    assert all(row.value > 0 for row in scaling)


@pytest.mark.parametrize(
    "channels, factor, expected", [((48, 96), 4 / 3, (64, 128)), ((48, 96), 2, (96, 192)), ((48, 96), 0.1, (32, 32))]
)
def test_widened_keeps_channels_divisible(channels, factor, expected):
    config = UNetConfig(channels=channels)  # GroupNorm 16 groups, 32 channels a head: multiples of 32
    assert roofline.widened(config, factor).channels == expected


def test_count_flops_of_a_matmul():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert measure.count_flops(lambda: a @ b) == 2 * 8 * 16 * 4


def test_best_row_and_at_most_judge_only_where_asked():
    fractions = {"eager": 0.3, "compiled": 0.7, "layers": 0.9}
    best = roofline.best_row("UNet", fractions, ("eager", "compiled"), 0.6, judged=True)
    assert best.metric == "best UNet forward (compiled): achieved / peak" and best.value == 0.7
    assert (best.target, best.passed, best.extra) == (">= 0.6", True, {"variant": "compiled"})
    unjudged = roofline.best_row("MM-DiT", fractions, fractions, 0.95, judged=False)
    assert unjudged.metric.startswith("best MM-DiT forward (layers)") and (unjudged.target, unjudged.passed) == (
        "",
        None,
    )
    from sdedu.bench.safety_erasure import SECTION, at_most

    row = at_most("time", 301.0, 300, full=True, unit="s", extra={"n": 1})
    assert (row.section, row.target, row.passed, row.unit, row.extra) == (SECTION, "<= 300", False, "s", {"n": 1})
    assert at_most("miss", 0.01, 0.05, full=False).passed is None and at_most("miss", 0.01, 0.05, True).passed
