"""The benchmark: `python -m sdedu.bench [--quick] [--json out.json]`.

Measures the shipped model against the targets of the course (see the table it prints):

    adherence   full prompts, 25 DDIM steps, default guidance, 200 images: colour, shape,
                position and size read off by the judge (`sdedu.metrics`)
    diversity   the partial prompt "a red shape": how often each shape appears
    held_out    adherence on the (colour, shape) pairs never seen in training
    speed       seconds for 16 images x 25 steps with guidance (median of several repeats)
    vae         reconstruction PSNR of the VAE on images it never saw

Each section is a function `section(context) -> list[Row]` listed in SECTIONS; add a section by
writing one more function and appending it. `context` holds the pipeline, the device, quick mode
and a `generate` helper that batches calls. Timings live here, never in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

from sdedu import metrics
from sdedu.data import shapes

STEPS = 25


@dataclass
class Row:
    """One measured figure: `value` against `target` (a text like ">= 0.95"), `passed` if it has one."""

    section: str
    metric: str
    value: float
    target: str = ""
    passed: bool | None = None
    unit: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Context:
    """What every section gets: the pipeline, quick mode, and sizes that shrink in quick mode."""

    pipe: object
    quick: bool
    device: torch.device
    seed: int = 0

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def generate(self, prompts: list[str], batch_size: int = 100, **kwargs) -> torch.Tensor:
        """Images for the prompts, generated in batches, each batch seeded from the context's seed."""
        chunks = []
        for start in range(0, len(prompts), batch_size):
            seed = self.seed + start
            chunks.append(
                self.pipe(prompts[start : start + batch_size], num_inference_steps=STEPS, seed=seed, **kwargs).cpu()
            )
        return torch.cat(chunks)


def _at_least(section, metric, value, floor, unit="") -> Row:
    return Row(section, metric, float(value), f">= {floor:g}", bool(value >= floor), unit)


# ---- sections ------------------------------------------------------------------------------


def adherence_section(ctx: Context) -> list[Row]:
    """Full prompts for attributes drawn from the training distribution (held-out pairs excluded)."""
    n = ctx.n(200, 48)
    attributes = shapes.sample_attributes(n, torch.Generator().manual_seed(ctx.seed + 1), exclude_held_out=True)
    prompts = [shapes.caption(a) for a in attributes]
    scores = metrics.adherence(ctx.generate(prompts), attributes)
    floors = {"color": 0.98, "shape": 0.95, "position": 0.95, "size": 0.95}
    rows = [_at_least("adherence", name, scores[name], floor) for name, floor in floors.items()]
    rows.append(Row("adherence", "all four", scores["all"], extra={"n": n}))
    return rows


def diversity_section(ctx: Context) -> list[Row]:
    """The partial prompt "a red shape": each shape should appear at least 20% of the time."""
    n = ctx.n(200, 48)
    prompt = "a red shape"
    verdicts = metrics.judge(ctx.generate([prompt] * n))
    split = metrics.diversity(verdicts, "shape")
    rows = [_at_least("diversity", f'"{prompt}": {s}', split["fractions"][s], 0.2) for s in shapes.SHAPES]
    rows.append(Row("diversity", f'"{prompt}": colour red', metrics.adherence(verdicts, [prompt] * n)["color"]))
    rows.append(
        Row(
            "diversity",
            f'"{prompt}": shape entropy / log2(3)',
            split["normalized_entropy"],
            extra={"counts": split["counts"], "n": n},
        )
    )
    return rows


def held_out_section(ctx: Context) -> list[Row]:
    """Compositional generalisation: full prompts for (colour, shape) pairs never trained on."""
    n = ctx.n(100, 24)
    rows = []
    gen = torch.Generator().manual_seed(ctx.seed + 2)
    for color, shape in shapes.HELD_OUT:
        attributes = [{**a, "color": color, "shape": shape} for a in shapes.sample_attributes(n, gen)]
        scores = metrics.adherence(ctx.generate([shapes.caption(a) for a in attributes]), attributes)
        for name in ("color", "shape", "all"):
            rows.append(Row("held_out", f"{color} {shape}: {name}", scores[name], extra={"n": n}))
    return rows


def speed_section(ctx: Context) -> list[Row]:
    """Seconds for 16 images x 25 DDIM steps with guidance, median of several repeats."""
    repeats = ctx.n(7, 3)
    prompts = [shapes.caption(a) for a in shapes.sample_attributes(16, torch.Generator().manual_seed(0))]
    ctx.pipe(prompts, num_inference_steps=STEPS)  # warm-up
    times = []
    for _ in range(repeats):
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        ctx.pipe(prompts, num_inference_steps=STEPS)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return [
        Row(
            "speed",
            "16 images x 25 steps, guided",
            median,
            "<= 1",
            median <= 1.0,
            "s",
            extra={
                "repeats": times,
                "threads": torch.get_num_threads(),
                "device": str(ctx.device),
                # Other processes on the machine slow this down; the load says how busy it was.
                "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            },
        )
    ]


def vae_section(ctx: Context) -> list[Row]:
    """VAE reconstruction PSNR (dB) on fresh images, and on the held-out pairs in particular."""
    from sdedu.models.vae import psnr

    n = ctx.n(1000, 200)
    images, _, attributes = shapes.sample(n, seed=987_654_321)
    held = torch.tensor([(a["color"], a["shape"]) in shapes.HELD_OUT for a in attributes])
    with torch.no_grad():
        recon = torch.cat(
            [ctx.pipe.decode_latents(ctx.pipe.encode_images(images[i : i + 250])).cpu() for i in range(0, n, 250)]
        )
    values = psnr(recon, images)
    return [
        _at_least("vae", "reconstruction PSNR", values.mean().item(), 25, "dB"),
        Row(
            "vae",
            "reconstruction PSNR, held-out pairs",
            values[held].mean().item(),
            unit="dB",
            extra={"n": int(held.sum())},
        ),
    ]


SECTIONS = [adherence_section, diversity_section, held_out_section, speed_section, vae_section]

from sdedu import bench_perf  # noqa: E402  (performance sections, issue 6: see sdedu/bench_perf/)

SECTIONS += bench_perf.SECTIONS


def section_name(section) -> str:
    return section.__name__.removesuffix("_section")


# ---- running and reporting -------------------------------------------------------------------


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
        "guidance_scale": _default_guidance(),
        "device": str(ctx.device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "section_seconds": seconds,
        "rows": [asdict(r) for r in rows],
        "all_targets_met": all(r.passed for r in rows if r.passed is not None),
    }


def _default_guidance() -> float:
    from sdedu.pipeline import DEFAULT_GUIDANCE_SCALE

    return DEFAULT_GUIDANCE_SCALE


def format_row(row: Row) -> str:
    value = f"{row.value:.3f} {row.unit}".strip()
    mark = "" if row.passed is None else ("ok" if row.passed else "MISSED")
    return f"{row.section:<10} {row.metric:<40} {value:>12}  {row.target:<8} {mark}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdedu.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats (about a minute)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--weights", default=None, help="folder of other weights (default: the shipped ones)")
    parser.add_argument("--seed", type=int, default=0, help="seed of prompts and noise (default 0)")
    names = [section_name(s) for s in SECTIONS]
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=names,
        default=None,
        metavar="NAME",
        help=f"run only these sections: {', '.join(names)}",
    )
    args = parser.parse_args(argv)
    print(
        f"sdedu benchmark ({'quick' if args.quick else 'full'}; {STEPS} DDIM steps, guidance "
        f"{_default_guidance():g}, {torch.get_num_threads()} thread(s), device {args.device})"
    )
    print(f"{'section':<10} {'metric':<40} {'value':>12}  {'target':<8}")
    report = run(quick=args.quick, device=args.device, sections=args.sections, seed=args.seed, weights=args.weights)
    print(f"all targets met: {report['all_targets_met']}   (seconds per section: {report['section_seconds']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
