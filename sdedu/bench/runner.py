"""Running the benchmark: the list of sections, `run` (a report as a dict) and the command line."""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict

import torch

from sdedu.bench.adaptation import adaptation_section
from sdedu.bench.common import is_trained, random_pipeline
from sdedu.bench.precision import precision_section
from sdedu.bench.quality import adherence_section, diversity_section, held_out_section, speed_section, vae_section
from sdedu.bench.report import STEPS, Context, format_row, section_name
from sdedu.bench.roofline import roofline_section
from sdedu.bench.safety import safety_section
from sdedu.bench.samplers import samplers_section
from sdedu.bench.sampling import ddim_vs_ddpm_section, latent_vs_pixel_section, scaling_section
from sdedu.bench.sd3 import sd3_section
from sdedu.bench.vs_diffusers import sampler_overhead_section, unet_vs_diffusers_section
from sdedu.pipeline import DEFAULT_GUIDANCE_SCALE

#: What the trained model does (they need trained weights to mean anything).
QUALITY_SECTIONS = [adherence_section, diversity_section, held_out_section, speed_section, vae_section]
#: How fast, against what, at what cost (they run on random weights too).
PERFORMANCE_SECTIONS = [
    unet_vs_diffusers_section,
    sampler_overhead_section,
    ddim_vs_ddpm_section,
    samplers_section,
    latent_vs_pixel_section,
    precision_section,
    roofline_section,
    scaling_section,
]
#: The two shipped models side by side (UNet + eps + DDIM vs the tiny SD3's MM-DiT + flow + Euler).
COMPARISON_SECTIONS = [sd3_section]
SECTIONS = QUALITY_SECTIONS + PERFORMANCE_SECTIONS + COMPARISON_SECTIONS + [adaptation_section, safety_section]


def run(pipe=None, quick: bool = False, device="cpu", sections=None, seed: int = 0, weights=None, log=print) -> dict:
    """Run the chosen sections (default all) and return the report as a dict."""
    from sdedu.pipeline import TinyStableDiffusion

    pipe = pipe or TinyStableDiffusion.from_pretrained(weights, device=device)
    ctx = Context(pipe=pipe, quick=quick, device=torch.device(device), seed=seed)
    chosen = [s for s in SECTIONS if sections is None or section_name(s) in sections]
    rows, seconds = [], {}
    for section in chosen:
        start = time.perf_counter()
        new_rows = section(ctx)
        seconds[section_name(section)] = round(time.perf_counter() - start, 2)
        for row in new_rows:
            log(format_row(row))
        rows += new_rows
    return {
        "quick": quick,
        "steps": STEPS,
        "guidance_scale": DEFAULT_GUIDANCE_SCALE,
        "device": str(ctx.device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "trained": is_trained(pipe),
        "section_seconds": seconds,
        "rows": [asdict(r) for r in rows],
        "all_targets_met": all(r.passed for r in rows if r.passed is not None),
    }


def main(argv=None) -> int:
    names = [section_name(s) for s in SECTIONS]
    parser = argparse.ArgumentParser(
        prog="python -m sdedu.bench",
        description="sdedu's benchmark: quality targets and performance ratios (pydoc sdedu.bench)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats (about a minute)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--weights", default=None, help="folder of other weights (default: the shipped ones)")
    parser.add_argument("--seed", type=int, default=0, help="seed of prompts and noise (default 0)")
    parser.add_argument(
        "--random",
        action="store_true",
        help="randomly initialised networks (timings only: run with --sections of the performance ones)",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=names,
        default=None,
        metavar="NAME",
        help=f"run only these sections: {', '.join(names)}",
    )
    args = parser.parse_args(argv)
    pipe = random_pipeline(device=args.device) if args.random else None
    print(
        f"sdedu benchmark ({'quick' if args.quick else 'full'}; {STEPS} DDIM steps, guidance "
        f"{DEFAULT_GUIDANCE_SCALE:g}, {torch.get_num_threads()} thread(s), device {args.device}"
        f"{', random weights' if args.random else ''})"
    )
    print(f"{'section':<10} {'metric':<40} {'value':>12}  {'target':<8}")
    report = run(
        pipe, quick=args.quick, device=args.device, sections=args.sections, seed=args.seed, weights=args.weights
    )
    print(f"all targets met: {report['all_targets_met']}   (seconds per section: {report['section_seconds']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return 0
