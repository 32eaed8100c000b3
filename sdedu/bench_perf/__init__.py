"""Performance sections of the benchmark: how fast, against what, and at what cost in adherence.

Each section is a function, `<name>_section(ctx)`, and a section of `python -m sdedu.bench`
(registered in sdedu/bench.py's SECTIONS); `python -m sdedu.bench_perf` runs only these, on
randomly initialised networks when no trained weights are shipped (then adherence is skipped).
Every comparison is measured side by side in the same run and reported as a ratio, each time the
median of several repeats:

    vs_diffusers.py
      unet_vs_diffusers  sdedu's UNet vs diffusers' UNet2DConditionModel of the nearest config,
                         and block for block (ResBlock, transformer block) at identical sizes
      sampler_overhead   sdedu's DDIM loop vs the same loop with diffusers' DDIMScheduler
    sampling.py
      ddim_vs_ddpm       DDIM 10/25/50 steps vs DDPM 1000: time and adherence
      latent_vs_pixel    the same UNet on 8x8x4 latents vs 32x32x3 pixels: a training step, sampling
      scaling            sampling time against batch size and number of steps
    precision.py
      precision          fp32 vs bf16 vs int8 vs pruned vs compiled (+ bf16): time, size, adherence
    roofline.py
      roofline           the UNet's achieved FLOP/s against a matmul peak measured now, that
                         of its matrix kernels alone (the most fusion could give), and that
                         of wider UNets (how it grows with the model's size)

measure.py holds how to time and count (interleaved medians, FLOPs, the matmul peak); common.py
what the sections share (rows, prompts, inputs, the compiled and random pipelines).

Timings depend on the machine and on what else runs on it: compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json

import torch

from sdedu.bench_perf.common import is_trained, random_pipeline
from sdedu.bench_perf.precision import precision_section
from sdedu.bench_perf.roofline import roofline_section
from sdedu.bench_perf.sampling import ddim_vs_ddpm_section, latent_vs_pixel_section, scaling_section
from sdedu.bench_perf.vs_diffusers import sampler_overhead_section, unet_vs_diffusers_section

SECTIONS = [
    unet_vs_diffusers_section,
    sampler_overhead_section,
    ddim_vs_ddpm_section,
    latent_vs_pixel_section,
    precision_section,
    roofline_section,
    scaling_section,
]


def main(argv=None) -> int:
    from sdedu import bench
    from sdedu.pipeline import TinyStableDiffusion
    from sdedu.weights import WeightsError

    names = [bench.section_name(s) for s in SECTIONS]
    parser = argparse.ArgumentParser(prog="python -m sdedu.bench_perf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    parser.add_argument("--random", action="store_true", help="random weights even if trained ones are shipped")
    parser.add_argument("--weights", default=None, help="folder of trained weights (default: the shipped ones)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=names,
        default=names,
        metavar="NAME",
        help=f"run only these: {', '.join(names)}",
    )
    args = parser.parse_args(argv)
    pipe = None
    if not args.random:
        try:
            pipe = TinyStableDiffusion.from_pretrained(args.weights, device=args.device)
        except (WeightsError, FileNotFoundError) as err:
            print(f"no trained weights ({err}); timing randomly initialised networks, adherence skipped")
    pipe = pipe or random_pipeline(device=args.device)
    print(
        f"sdedu performance benchmark ({'quick' if args.quick else 'full'}; {torch.get_num_threads()} thread(s), "
        f"device {args.device}, {'trained' if is_trained(pipe) else 'random'} weights)"
    )
    report = bench.run(pipe=pipe, quick=args.quick, device=args.device, sections=args.sections)
    print(f"seconds per section: {report['section_seconds']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return 0
