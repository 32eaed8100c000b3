"""Train the tiny Stable Diffusion from scratch: `python -m sdedu.train {vae,text,unet,all}`.

    python -m sdedu.train all --out runs/tiny-sd          # the whole recipe (~20 min on 2 cores)
    python -m sdedu.train vae --steps 20                  # a smoke run of one part
    python -m sdedu.train unet --out runs/tiny-sd --resume  # continue an interrupted UNet run
    python -m sdedu.train sd3 --out runs/tiny-sd3          # the tiny SD3 (MM-DiT + flow) on the shipped VAE/text
    python -m sdedu.train controlnet --out runs/controlnet # a ControlNet (mask control) for the shipped model
    python -m sdedu.train memorise --out runs/memorise     # the UNet recipe on 32 images: it memorises them
    python -m sdedu.train checker --out runs/checker       # the safety checker's image tower (sdedu.safety.checker)

Each part writes its loss log (loss.csv) and checkpoint into <out>/<part>/ and its weights into
<out>/weights/ (safetensors + manifest.json, loadable with
`TinyStableDiffusion.from_pretrained("<out>/weights")`). `unet` alone reuses the VAE and text
encoder already in <out>/weights. Ctrl-C saves a checkpoint (a crash keeps the last one);
`--resume` continues from it, and refuses a checkpoint of another run (seed, steps, recipe).
Errors are one line (exit code 2), never a traceback.
Threads: --threads, else $SDEDU_THREADS, else $OMP_NUM_THREADS, else 1.
Data-parallel: `torchrun --nproc_per_node=N -m sdedu.train unet ...` trains with DDP (N must divide
the batch sizes; each rank gets the machine's cores / N threads unless --threads says otherwise);
see sdedu.training.distributed and docs/DISTRIBUTED.md.
The same from Python: `sdedu.training.recipes.train_all(out_dir, recipe, parts=...)`.
"""

from __future__ import annotations

import json
import os
import sys

from sdedu.config import OneLineParser, device_argument

PARTS = {
    "vae": ("vae",),
    "text": ("text",),
    "unet": ("unet",),
    "all": ("vae", "text", "unet"),
    "sd3": ("sd3",),
    "controlnet": ("controlnet",),
    "memorise": ("memorise",),
    "checker": ("checker",),
}


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m sdedu.train", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "part",
        choices=sorted(PARTS),
        help="what to train: vae, text, unet, all three in order, sd3 (sdedu.training.sd3_recipe) "
        "or controlnet (sdedu.training.controlnet_recipe) or memorise (sdedu.training.memorisation_recipe)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="run folder (default: runs/tiny-sd; runs/tiny-sd3 for sd3, runs/controlnet for controlnet, "
        "runs/memorise for memorise)",
    )
    parser.add_argument("--steps", type=int, default=None, help="override every part's step count (smoke runs)")
    parser.add_argument("--seed", type=int, default=0, help="the recipe's seed (default: 0)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (fast only with bf16 hardware)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", type=device_argument, default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--no-eval", action="store_true", help="skip the adherence evaluation after the UNet")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"argument --steps: must be >= 1; got {args.steps}")
    if args.part in RECIPES:
        return RECIPES[args.part](parser, args)
    from sdedu.training.recipes import Recipe, train_all

    recipe = Recipe().with_steps(args.steps, seed=args.seed, bf16=args.bf16)
    distributed, device, threads = None, args.device, args.threads
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun with several processes
        from sdedu.training.distributed import cleanup, init_from_env

        distributed = init_from_env(device=args.device, threads=args.threads)
        device, threads = distributed.device, distributed.threads
    try:
        weights = _run(
            parser,
            "argument --out: the weights already in it do not load",
            train_all,
            args.out or "runs/tiny-sd",
            recipe,
            resume=args.resume,
            progress=not args.no_progress,
            device=device,
            threads=threads,
            evaluate=not args.no_eval,
            parts=PARTS[args.part],
            distributed=distributed,
        )
    finally:
        if distributed is not None:
            cleanup()
    if distributed is not None and not distributed.is_main:
        return 0  # rank 0 reports
    return _report(weights)


def _run(parser, weights_problem: str, train_fn, *args, **kwargs):
    """train_fn(*args, **kwargs) -> its weights folder; its errors as one line (exit code 2).

    CheckpointError: --resume met another run's checkpoint. WeightsError: the weights it starts
    from do not load (`weights_problem` says which). ValueError: a setting the recipe refuses
    (e.g. a batch that --nproc_per_node does not divide).
    """
    from sdedu.training.checkpoint import CheckpointError
    from sdedu.weights import WeightsError

    try:
        return train_fn(*args, **kwargs)
    except CheckpointError as error:
        parser.error(f"argument --resume: {error}")
    except WeightsError as error:
        parser.error(f"{weights_problem}: {error}")
    except ValueError as error:
        parser.error(str(error))


def _options(args) -> dict:
    """The loop's options every resumable recipe takes from the command line."""
    return {"resume": args.resume, "progress": not args.no_progress, "device": args.device, "threads": args.threads}


FROZEN_VAE_TEXT = "the shipped VAE and text encoder do not load"


def _train_sd3(parser, args) -> int:
    """The tiny SD3's recipe: the MM-DiT alone, on the shipped VAE and text encoder (one process)."""
    from sdedu.training.sd3_recipe import SD3Recipe, train_sd3

    recipe = SD3Recipe().with_steps(args.steps, seed=args.seed, bf16=args.bf16)
    out = args.out or "runs/tiny-sd3"
    return _report(_run(parser, FROZEN_VAE_TEXT, train_sd3, out, recipe, evaluate=not args.no_eval, **_options(args)))


def _train_controlnet(parser, args) -> int:
    """A ControlNet for the shipped model (everything else frozen), one process."""
    from sdedu.training.controlnet_recipe import ControlNetRecipe, train_controlnet

    recipe = ControlNetRecipe().with_steps(args.steps, seed=args.seed, bf16=args.bf16)
    out = args.out or "runs/controlnet"
    return _report(_run(parser, "the shipped model does not load", train_controlnet, out, recipe, **_options(args)))


def _train_memorise(parser, args) -> int:
    """The UNet recipe on 32 fixed images (it memorises them), on the shipped VAE and text encoder, one process."""
    from sdedu.training.memorisation_recipe import memorising_recipe, train_memorising

    recipe = memorising_recipe(seed=args.seed, steps=args.steps, bf16=args.bf16)
    return _report(
        _run(parser, FROZEN_VAE_TEXT, train_memorising, args.out or "runs/memorise", recipe, **_options(args))
    )


def _train_checker(parser, args) -> int:
    """The safety checker's image tower, against the shipped (frozen) text encoder, one process (no resume)."""
    from dataclasses import replace

    from sdedu.training.checker_recipe import CheckerRecipe, train_checker_encoder

    recipe = replace(CheckerRecipe(), seed=args.seed, **({"steps": args.steps} if args.steps else {}))
    out, options = args.out or "runs/checker", {"progress": not args.no_progress, "threads": args.threads}
    return _report(_run(parser, FROZEN_VAE_TEXT, train_checker_encoder, out, recipe, **options))


#: The parts trained by a recipe of their own (not `train_all`), one process each.
RECIPES = {
    "sd3": _train_sd3,
    "controlnet": _train_controlnet,
    "memorise": _train_memorise,
    "checker": _train_checker,
}


def _report(weights) -> int:
    """Print the run's summary (weights folder, timings, metrics, per component) as JSON."""
    from sdedu.weights import read_manifest

    manifest = read_manifest(weights)
    summary = {
        "weights": str(weights),
        "training_seconds": manifest.get("training_seconds"),
        "training_cpu_seconds": manifest.get("training_cpu_seconds"),
        "metrics": manifest.get("metrics"),
    }
    for name, entry in manifest.get("components", {}).items():
        summary[name] = {
            "parameters": entry["parameters"],
            **{k: v for k, v in entry.get("training", {}).items() if k not in ("final_loss",)},
        }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    status = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a torchrun rank: end without C++ teardown (see exit_rank)
        from sdedu.training.distributed import exit_rank

        exit_rank(status)
    sys.exit(status)
