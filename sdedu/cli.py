"""The `sdedu` command.

    sdedu generate "a large red circle in the top left" -n 8 --seed 0 -o grid.png
    sdedu train all            (delegates to `python -m sdedu.train`)
    sdedu bench --quick        (delegates to `python -m sdedu.bench`)
    sdedu course [DIR]         (the course copied into DIR, then JupyterLab there; --check: is the setup ready?)
    sdedu info IMAGE.png       (what made a generated PNG: prompt, seed, sampler, weights, ...)
    sdedu --help

Every subcommand is a pair of functions, `_add_<name>(subparsers)` to declare its arguments and
`_run_<name>(args, parser)` to do the work, listed in SUBCOMMANDS. Every error is one line,
`sdedu <command>: error: <what, naming the argument>`, never a traceback, with exit code 2 for
bad input (checked before any work: arguments, the output path, the weights) and 1 when the
work itself fails (the grid cannot be written).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import tempfile
from pathlib import Path

from sdedu.config import OneLineParser, device_argument

CHUNK = 64  # images per pipeline call: memory stays bounded whatever -n is
MAX_GRID_PIXELS = 89_478_485  # PIL's decompression-bomb limit: a larger PNG will not open in most tools


DESCRIPTION = """\
sdedu: learn Stable Diffusion by building a tiny, real one.

Generate 32x32 images of the shapes world from a prompt with the shipped model (offline, CPU).
Prompts use the words: a, small, large, red, green, blue, yellow, magenta, cyan, circle, square,
triangle, shape, in, the, top, bottom, left, right, center, e.g.
  "a large red circle in the top left", "a small blue square in the center", "a red shape".
"""


# ---- argument types: each names what it expected ------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0; got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0; got {text}")
    return value


def _unit_float(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1]; got {text}")
    return value


# ---- generate ------------------------------------------------------------------------------


def _add_generate(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "generate",
        help="generate an image grid from a prompt",
        description="Generate images from a prompt with the shipped tiny Stable Diffusion and save them as a grid PNG.",
    )
    p.add_argument("prompt", help='what to draw, e.g. "a large red circle in the top left" ("" = unconditional)')
    p.add_argument("-n", "--num-images", type=_positive_int, default=8, help="number of images (default 8)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed; the same seed gives the same images")
    p.add_argument("-o", "--output", default="grid.png", help="PNG file to write (default grid.png)")
    p.add_argument("--steps", type=_positive_int, default=25, help="sampler steps (default 25)")
    p.add_argument(
        "--guidance",
        type=_non_negative_float,
        default=None,
        help="classifier-free guidance scale (default: the pipeline's default, 2.0)",
    )
    p.add_argument(
        "--sampler",
        default="ddim",
        help="a name in sdedu.pipeline.SAMPLERS, e.g. ddim, ddpm, dpmpp_2m (default ddim; a wrong name lists them all)",
    )
    p.add_argument(
        "--eta", type=_unit_float, default=0.0, help="DDIM noise weight in [0, 1] (default 0: deterministic)"
    )
    p.add_argument("--device", type=device_argument, default="cpu", help="torch device (default cpu)")
    p.add_argument("--weights", default=None, help="folder of other weights (default: the shipped ones)")
    p.add_argument("--columns", type=_positive_int, default=None, help="images per row of the grid (default: up to 8)")
    p.add_argument("--scale", type=_positive_int, default=4, help="pixel upscaling of each 32x32 image (default 4)")
    p.add_argument("--title", action="store_true", help="write the prompt above the grid")
    return p


def _check_output(text: str, parser) -> Path:
    """The -o path, checked before any work: a .png file name in an existing, writable folder."""
    output = Path(text)
    if output.is_dir():
        parser.error(f"argument -o/--output: {text!r} is a folder; expected a .png file name")
    if output.suffix.lower() != ".png":
        parser.error(f"argument -o/--output: expected a .png file name; got {text!r}")
    folder = output.parent
    if not folder.exists():
        parser.error(f"argument -o/--output: the folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        parser.error(f"argument -o/--output: {str(folder)!r} is not a folder")
    try:  # the one sure test of writability: write something there
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".sdedu-", suffix=".png"):
            pass
        if output.exists():
            with output.open("ab"):
                pass
    except OSError as error:
        parser.error(f"argument -o/--output: cannot write {text!r}: {error.strerror}")
    return output


def _run_generate(args, parser) -> int:
    # 1. Everything that can be checked before the work: the output path, the grid's size, the weights.
    from sdedu.viz.png import grid_size, save_grid, to_uint8

    output = _check_output(args.output, parser)
    height, width = grid_size(args.num_images, args.columns, args.scale)
    if height * width > MAX_GRID_PIXELS:
        parser.error(
            f"argument -n/--num-images: {args.num_images} images at --scale {args.scale} make a {width} x {height} "
            f"grid, over {MAX_GRID_PIXELS:,} pixels (most tools will not open it); use a smaller --scale or -n"
        )
    import torch
    from tqdm.auto import tqdm

    from sdedu.pipeline import DEFAULT_GUIDANCE_SCALE, TinyStableDiffusion
    from sdedu.pipeline.registry import SAMPLERS, TAKES_ETA

    if args.sampler not in SAMPLERS:
        parser.error(f"argument --sampler: must be one of {', '.join(SAMPLERS)}; got {args.sampler!r}")
    if args.eta and args.sampler not in TAKES_ETA:
        parser.error(
            f"argument --eta: only {', '.join(TAKES_ETA)} takes eta; got --eta {args.eta:g} with {args.sampler}"
        )

    try:
        pipe = TinyStableDiffusion.from_pretrained(args.weights, device=args.device)
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"argument --weights: could not load weights: {error}")
    guidance = DEFAULT_GUIDANCE_SCALE if args.guidance is None else args.guidance
    # 2. Generate in chunks (image i always draws from seed + i, so chunks change nothing), keeping
    #    only 8-bit images: 3 KB each.
    chunks = []
    with tqdm(total=args.num_images, unit="image", disable=args.num_images <= CHUNK, file=sys.stderr) as bar:
        for start in range(0, args.num_images, CHUNK):
            count = min(CHUNK, args.num_images - start)
            try:
                images = pipe(
                    args.prompt,
                    num_inference_steps=args.steps,
                    guidance_scale=guidance,
                    seed=args.seed + start,
                    sampler=args.sampler,
                    eta=args.eta,
                    num_images_per_prompt=count,
                )
            except ValueError as error:
                parser.error(f"argument prompt or settings: {error}")
            chunks.append(to_uint8(images))
            bar.update(count)
    images = torch.cat(chunks)
    # 3. The grid, with what made it (sdedu.viz.provenance).
    from sdedu.viz.provenance import generation_provenance

    provenance = generation_provenance(pipe, args.prompt, args.seed, args.sampler, args.steps, guidance, args.eta)
    title = f'"{args.prompt}"  seed {args.seed}, {args.steps} {args.sampler} steps, guidance {guidance:g}'
    try:
        save_grid(
            images,
            output,
            columns=args.columns,
            scale=args.scale,
            title=title if args.title else None,
            provenance=provenance,
        )
    except OSError as error:
        parser.exit(1, f"{parser.prog}: error: could not write {str(output)!r}: {error}\n")
    print(f"wrote {output} ({images.shape[0]} images of {args.prompt!r}, seed {args.seed})")
    return 0


# ---- info ------------------------------------------------------------------------------------


def _add_info(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "info",
        help="print what made a generated PNG (prompt, seed, sampler, steps, guidance, weights)",
        description="Print the provenance metadata sdedu writes into its PNGs (see sdedu/viz/provenance.py).",
    )
    p.add_argument("image", help="a PNG written by sdedu, e.g. grid.png")
    return p


def _run_info(args, parser) -> int:
    from sdedu.viz.provenance import check_png, read_provenance

    try:
        check_png(args.image, argument="argument image")
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    try:
        provenance = read_provenance(args.image)
    except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for a damaged PNG, or a bad field
        parser.exit(1, f"{parser.prog}: error: could not read {args.image!r}: {error}\n")
    if not provenance:
        parser.exit(
            1,
            f"{parser.prog}: {args.image!r} carries no sdedu provenance metadata "
            "(it was not written by sdedu, or its metadata was stripped)\n",
        )
    for field, value in provenance.items():
        print(f"{field}: {value}")
    return 0


# ---- delegating subcommands -----------------------------------------------------------------


def _delegate(name: str, module_name: str, help_text: str):
    def add(subparsers):
        # No arguments of its own: everything after the subcommand goes to the module's main.
        return subparsers.add_parser(
            name,
            help=help_text,
            add_help=False,
            description=f"{help_text}; arguments are passed to `python -m {module_name}`.",
        )

    def run(args, parser):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                parser.error(f"{module_name} is not available in this installation")
            raise
        result = module.main(args.passed_on)
        return int(result or 0)

    return add, run


_add_train, _run_train = _delegate(
    "train", "sdedu.train", "train the VAE, text encoder and UNet (vae, text, unet or all)"
)
_add_bench, _run_bench = _delegate("bench", "sdedu.bench", "measure adherence, diversity, speed and VAE quality")


_add_grade, _run_grade = _delegate("grade", "sdedu.grading.grader", "grade submitted exercise notebooks into one CSV")


# ---- course ----------------------------------------------------------------------------------


def _add_course(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "course",
        help="copy the course into a folder (never overwriting your files) and open it in JupyterLab",
        description="Copy the notebooks and exercises into FOLDER (files already there are never overwritten), "
        "then open JupyterLab there on notebook 00. See sdedu/course.py.",
    )
    p.add_argument("folder", nargs="?", default="sdedu-course", help="the course folder (default ./sdedu-course)")
    p.add_argument("--check", action="store_true", help="only check the setup (versions, weights, threads, folder)")
    p.add_argument("--no-lab", action="store_true", help="copy the course but do not start JupyterLab")
    p.add_argument("--port", type=_positive_int, default=None, help="JupyterLab's port (default: its own, 8888)")
    return p


def _run_course(args, parser) -> int:
    if args.check:
        from sdedu.course_check import main as check

        return check(args.folder)
    from sdedu.course import CourseVersionError
    from sdedu.course import main as open_course

    try:
        return open_course(args.folder, lab=not args.no_lab, port=args.port)
    except NotADirectoryError as error:
        parser.error(f"argument folder: {error}")
    except (CourseVersionError, OSError) as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")


SUBCOMMANDS = {
    "generate": (_add_generate, _run_generate),
    "train": (_add_train, _run_train),
    "bench": (_add_bench, _run_bench),
    "grade": (_add_grade, _run_grade),
    "course": (_add_course, _run_course),
    "info": (_add_info, _run_info),
}


DELEGATED = ("train", "bench", "grade")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = OneLineParser(prog="sdedu", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    from sdedu import __version__

    parser.add_argument("--version", action="version", version=f"sdedu {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    parsers = {name: add(subparsers) for name, (add, _) in SUBCOMMANDS.items()}
    return parser, parsers


def main(argv=None) -> int:
    """Entry point of the `sdedu` command; returns the exit code."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("sdedu: interrupted", file=sys.stderr)
        return 130


def _main(argv) -> int:
    parser, parsers = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        # Delegated subcommands parse their own arguments (including --help).
        args = argparse.Namespace(command=argv[0], passed_on=argv[1:])
    else:
        args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    _, run = SUBCOMMANDS[args.command]
    return run(args, parsers[args.command])


if __name__ == "__main__":
    sys.exit(main())
