"""The recipe that trains sdedu's tiny Stable Diffusion from scratch on a CPU, in three parts.

    1. VAE            images -> 8x8x4 latents and back; then the latent scale factor
    2. text encoder   contrastive (CLIP-style) pretraining against a tiny image encoder
    3. UNet           eps-prediction on scaled latents, conditioned on the frozen text encoder

This is Stable Diffusion's order: the autoencoder and the text encoder are trained first and
frozen (SD took CLIP ready-made), then the diffusion model learns in their latent space.
`train_all` runs the three, measures each (PSNR, retrieval accuracy, prompt adherence) and
writes safetensors files plus a manifest (`sdedu.weights`) into `<out>/weights`.

Data: the shapes world, drawn fresh for every step from a generator seeded with
(seed, step), with the held-out (colour, shape) pairs excluded. Captions are full with
probability `p_full`, otherwise each attribute is dropped independently with probability
`p_drop`, so partial prompts ("a red shape") are learnt with every shape equally often; then
conditioning dropout replaces a caption by "" with probability `p_uncond` so that one network
learns both eps(z_t, t, cond) and eps(z_t, t, "") for classifier-free guidance (Ho & Salimans 2022).

Small batches, many steps: at a fixed CPU budget, more updates beat bigger batches here. The
VAE reached 36 dB with 3000 steps of 8 images against 29 dB with 800 steps of 32 (the same
images seen), and judged shapes in its reconstructions went from 77% to 99.6% right; the UNet
followed shapes in 99-100% of full prompts with 3000 steps of 64 against 93% with 1300 of 128.

Speed: the UNet never sees pixels. Before it trains, a bank of images is encoded once by the
frozen VAE (means and log-variances); each step draws latents from it (z = mean + std * eps,
a fresh sample each time, as SD samples the posterior) and fresh partial captions.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from sdedu.data import shapes
from sdedu.diffusion import noise_prediction_loss
from sdedu.models.text_encoder import ContrastiveModel, TextEncoder, TextEncoderConfig, Tokenizer
from sdedu.models.unet import UNet, UNetConfig
from sdedu.models.vae import VAE, VAEConfig, psnr
from sdedu.training.distributed import local_batch_size
from sdedu.training.loop import TrainConfig, set_threads, train
from sdedu.weights import save_component, schedule_from_settings, update_manifest

EVAL_SEED = 10_000  # evaluation images come from seeds no training step uses
INIT_SEED_OFFSETS = {"vae": 101, "text": 102, "unet": 103}  # each part's initial weights: seed * 1_000_003 + offset


def build_seeded(make, seed: int, part: str):
    """`make()` run under torch's global RNG seeded from (seed, part), then the RNG restored.

    Module constructors draw their initial weights from the global RNG; seeding it here (on the
    CPU, before the module moves to its device) makes a part's initialisation depend only on the
    recipe's seed, whatever ran before and whatever the device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) * 1_000_003 + INIT_SEED_OFFSETS[part])
        return make()


@dataclass
class Recipe:
    """Every setting of the from-scratch recipe (recorded in the weights manifest)."""

    seed: int = 0
    # 1. VAE
    vae: VAEConfig = field(default_factory=VAEConfig)
    vae_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=3000, lr=2e-3, warmup_steps=50, ema_decay=0.995)
    )
    vae_batch_size: int = 8
    scale_factor_images: int = 2000
    # 2. text encoder
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    text_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=300, lr=2e-3, warmup_steps=30, ema_decay=0.0)
    )
    text_batch_size: int = 256
    # 3. UNet
    unet: UNetConfig = field(default_factory=UNetConfig)
    unet_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=3000, lr=1e-3, warmup_steps=100, ema_decay=0.999)
    )
    unet_batch_size: int = 64
    latent_bank: int = 12_000
    schedule: dict = field(default_factory=lambda: {"kind": "scaled_linear"})
    # captions
    p_full: float = 0.5
    p_drop: float = 0.5
    p_uncond: float = 0.1

    def with_steps(self, steps: int | None = None, seed: int | None = None, bf16: bool = False) -> Recipe:
        """A copy with every part's step count set to `steps` (for smoke runs), seed and bf16 set."""
        recipe = Recipe(**{k: getattr(self, k) for k in self.__dataclass_fields__})
        for name in ("vae_train", "text_train", "unet_train"):
            cfg = asdict(getattr(recipe, name))
            if steps is not None:
                cfg["steps"] = steps
                cfg["warmup_steps"] = min(cfg["warmup_steps"], max(steps // 10, 1))
            cfg["seed"] = recipe.seed if seed is None else seed
            cfg["bf16"] = bf16
            setattr(recipe, name, TrainConfig(**cfg))
        if seed is not None:
            recipe.seed = seed
        return recipe


# ---- data ------------------------------------------------------------------------------------


def captions_for(attributes: list[dict], generator: torch.Generator, p_full: float, p_drop: float):
    """Full captions with probability p_full, else each attribute dropped with probability p_drop.

    Returns the captions and, per caption, the dict of attributes it still names.
    """
    n = len(attributes)
    full = torch.rand(n, generator=generator) < p_full  # (n,)
    drops = torch.rand(n, len(shapes.ATTRIBUTES), generator=generator) < p_drop  # (n, 4)
    captions, named = [], []
    for i, item in enumerate(attributes):
        drop = [] if full[i] else [a for a, d in zip(shapes.ATTRIBUTES, drops[i].tolist()) if d]
        captions.append(shapes.caption(item, drop=drop))
        named.append({a: item[a] for a in shapes.ATTRIBUTES if a not in drop})
    return captions, named


def _codes(items: list[dict]) -> torch.Tensor:
    """(n, 4) integer code of each attribute (index into SHAPES, COLORS, ...), -1 where absent."""
    tables = (shapes.SHAPES, shapes.COLORS, shapes.SIZES, shapes.POSITIONS)
    return torch.tensor(
        [[table.index(item[a]) if a in item else -1 for a, table in zip(shapes.ATTRIBUTES, tables)] for item in items]
    )


def matches(attributes: list[dict], named: list[dict]) -> torch.Tensor:
    """match[i, j] = image i has every attribute caption j names: (n images, m captions) bool."""
    image, caption = _codes(attributes), _codes(named)  # (n, 4), (m, 4)
    agree = (caption[None, :, :] == -1) | (caption[None, :, :] == image[:, None, :])  # (n, m, 4)
    return agree.all(dim=-1)


def draw_images(n: int, generator: torch.Generator):
    """n training images (held-out pairs excluded) and their attributes."""
    attributes = shapes.sample_attributes(n, generator, exclude_held_out=True)
    return shapes.render(attributes, generator=generator), attributes


# ---- 1. VAE ------------------------------------------------------------------------------------


def train_vae(
    recipe: Recipe, out_dir=None, resume=False, progress=True, device="cpu", distributed=None
) -> tuple[VAE, dict]:
    """Train the KL autoencoder, set its scale factor, measure PSNR. Returns (EMA VAE, info)."""
    device = torch.device(device)
    vae = build_seeded(lambda: VAE(recipe.vae), recipe.seed, "vae").to(device)

    def loss_fn(model, generator):
        images, _ = draw_images(recipe.vae_batch_size, generator)
        return model.loss(images.to(device), generator=generator)  # the CPU step generator, on any device

    run = train(
        vae,
        loss_fn,
        recipe.vae_train,
        _sub(out_dir, "vae"),
        resume=resume,
        desc="VAE",
        progress=progress,
        distributed=distributed,
    )
    vae = run.ema_model
    # Latent scale factor, as for SD: 1 / std of sampled latents over training images.
    images, _ = draw_images(recipe.scale_factor_images, torch.Generator().manual_seed(recipe.seed + 1))
    scale = vae.compute_scale_factor(images.to(device), generator=torch.Generator().manual_seed(recipe.seed))
    info = {
        "train_seconds": run.seconds,
        "cpu_seconds": run.cpu_seconds,
        "seconds_per_step": run.seconds_per_step,
        "steps": run.steps,
        "final_loss": run.final_loss,
        "scale_factor": scale,
        **evaluate_vae(vae, device=device),
    }
    return vae, info


@torch.no_grad()
def evaluate_vae(vae: VAE, n: int = 1000, device="cpu") -> dict:
    """Reconstruction quality through the posterior mean on n fresh images.

    PSNR (dB) overall and on the held-out pairs, and the judge's shape accuracy on the
    reconstructions: the ceiling for the shape accuracy of generated images (a VAE that turns
    small squares into blobs caps the whole model, whatever the UNet learns).
    """
    from sdedu import metrics

    images, _, attributes = shapes.sample(n, seed=EVAL_SEED)
    recon = vae.decode(vae.encode(images.to(device))[0]).cpu().clamp(0, 1)
    values = psnr(recon, images)
    held = torch.tensor([(a["color"], a["shape"]) in shapes.HELD_OUT for a in attributes])
    small = [i for i, a in enumerate(attributes) if a["size"] == "small"]
    return {
        "psnr_db": float(values.mean()),
        "psnr_db_held_out_pairs": float(values[held].mean()),
        "psnr_images": n,
        "reconstruction_shape_accuracy": metrics.adherence(recon, attributes)["shape"],
        "reconstruction_shape_accuracy_small": metrics.adherence(recon[small], [attributes[i] for i in small])["shape"],
    }


# ---- 2. text encoder ---------------------------------------------------------------------------


def train_text_encoder(
    recipe: Recipe, out_dir=None, resume=False, progress=True, device="cpu", distributed=None
) -> tuple[TextEncoder, dict]:
    """CLIP-style contrastive pretraining with multi-positive targets. Returns (text encoder, info)."""
    device = torch.device(device)
    tokenizer = Tokenizer(max_length=recipe.text.max_length)
    model = build_seeded(lambda: ContrastiveModel(TextEncoder(recipe.text)), recipe.seed, "text").to(device)

    def loss_fn(model, generator):
        images, attributes = draw_images(recipe.text_batch_size, generator)
        captions, named = captions_for(attributes, generator, recipe.p_full, recipe.p_drop)
        match = matches(attributes, named)  # (B images, B captions)
        return model.loss(images.to(device), tokenizer(captions, device=device), match.to(device))

    run = train(
        model,
        loss_fn,
        recipe.text_train,
        _sub(out_dir, "text"),
        resume=resume,
        desc="text encoder",
        progress=progress,
        distributed=distributed,
    )
    info = {
        "train_seconds": run.seconds,
        "cpu_seconds": run.cpu_seconds,
        "seconds_per_step": run.seconds_per_step,
        "steps": run.steps,
        "final_loss": run.final_loss,
        **evaluate_text_encoder(run.ema_model, tokenizer, device=device),
    }
    return run.ema_model.text_encoder.eval(), info


@torch.no_grad()
def evaluate_text_encoder(model: ContrastiveModel, tokenizer: Tokenizer, n: int = 500, device="cpu") -> dict:
    """Zero-shot retrieval: how often an image's nearest full caption (of all 180) is its own."""
    images, captions, _ = shapes.sample(n, seed=EVAL_SEED)
    everything = [
        shapes.caption(dict(zip(shapes.ATTRIBUTES, combo)))
        for combo in _product(shapes.SHAPES, shapes.COLORS, shapes.SIZES, shapes.POSITIONS)
    ]
    text = torch.nn.functional.normalize(model.text_encoder.pooled(tokenizer(everything, device=device)), dim=-1)
    image = torch.nn.functional.normalize(model.image_encoder(images.to(device)), dim=-1)
    best = (image @ text.T).argmax(dim=1).cpu()
    return {"retrieval_top1": float(sum(everything[i] == c for i, c in zip(best.tolist(), captions)) / n)}


def _product(*lists):
    import itertools

    return list(itertools.product(*lists))


# ---- 3. UNet -----------------------------------------------------------------------------------


@torch.no_grad()
def encode_bank(vae: VAE, n: int, seed: int, device="cpu", batch_size: int = 500):
    """Encode n fresh training images once: (means, logvars) (n, 4, 8, 8) each, and attributes."""
    generator = torch.Generator().manual_seed(seed)
    means, logvars, attributes = [], [], []
    for start in range(0, n, batch_size):
        images, attrs = draw_images(min(batch_size, n - start), generator)
        mean, logvar = vae.encode(images.to(device))
        means.append(mean)
        logvars.append(logvar)
        attributes += attrs
    return torch.cat(means), torch.cat(logvars), attributes


def train_unet(
    recipe: Recipe,
    vae: VAE,
    text_encoder: TextEncoder,
    out_dir=None,
    resume=False,
    progress=True,
    device="cpu",
    distributed=None,
) -> tuple[UNet, dict]:
    """Train the UNet on scaled latents with the frozen VAE and text encoder. Returns (EMA UNet, info)."""
    device = torch.device(device)
    if recipe.unet.context_dim != text_encoder.config.width:
        raise ValueError(
            f"recipe.unet.context_dim must equal the text encoder's width {text_encoder.config.width}; "
            f"got {recipe.unet.context_dim}"
        )
    t0, cpu0 = time.perf_counter(), time.process_time()
    vae, text_encoder = vae.to(device).eval(), text_encoder.to(device).eval().requires_grad_(False)
    tokenizer = Tokenizer(max_length=text_encoder.config.max_length)
    schedule = schedule_from_settings(recipe.schedule).to(device)
    means, logvars, attributes = encode_bank(vae, recipe.latent_bank, recipe.seed + 2, device)
    stds, scale = torch.exp(0.5 * logvars), float(vae.scale_factor)
    bank_seconds, bank_cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    unet = build_seeded(lambda: UNet(recipe.unet), recipe.seed, "unet").to(device)

    def loss_fn(model, generator):
        # 1. Latents z_0 = scale_factor * (mean + std * eps) of random bank images.
        index = torch.randint(len(attributes), (recipe.unet_batch_size,), generator=generator)
        noise = torch.randn(means[index].shape, generator=generator).to(device)
        z0 = scale * (means[index] + stds[index] * noise)  # (B, 4, 8, 8)
        # 2. Captions, partial or full, then conditioning dropout to "" (for guidance).
        captions, _ = captions_for([attributes[i] for i in index.tolist()], generator, recipe.p_full, recipe.p_drop)
        uncond = (torch.rand(len(captions), generator=generator) < recipe.p_uncond).tolist()
        captions = ["" if u else c for c, u in zip(captions, uncond)]
        with torch.no_grad():
            cond = text_encoder(tokenizer(captions, device=device))  # (B, L, D), frozen
        # 3. Ho et al.'s simple loss on the latents.
        return noise_prediction_loss(model, z0, schedule, generator=generator, cond=cond)

    run = train(
        unet,
        loss_fn,
        recipe.unet_train,
        _sub(out_dir, "unet"),
        resume=resume,
        desc="UNet",
        progress=progress,
        distributed=distributed,
    )
    info = {
        "train_seconds": run.seconds + bank_seconds,
        "cpu_seconds": run.cpu_seconds + bank_cpu_seconds,
        "latent_bank_seconds": bank_seconds,
        "seconds_per_step": run.seconds_per_step,
        "steps": run.steps,
        "final_loss": run.final_loss,
    }
    return run.ema_model, info


# ---- evaluation and the whole recipe -------------------------------------------------------------


@torch.no_grad()
def evaluate_generation(
    pipe, n: int = 200, guidance_scale: float | None = None, num_inference_steps: int = 25, batch_size: int = 100
) -> dict:
    """Prompt adherence (by sdedu.metrics' judge) on n full prompts, on held-out pairs, and the
    shape diversity of "a red shape"."""
    from sdedu import metrics
    from sdedu.pipeline import DEFAULT_GUIDANCE_SCALE

    guidance_scale = DEFAULT_GUIDANCE_SCALE if guidance_scale is None else guidance_scale

    def generate(prompts, seed):
        out = [
            pipe(
                prompts[i : i + batch_size],
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                seed=seed + i,
            )
            for i in range(0, len(prompts), batch_size)
        ]
        return torch.cat(out)

    _, full, _ = shapes.sample(n, seed=EVAL_SEED + 1, exclude_held_out=True)
    generator = torch.Generator().manual_seed(EVAL_SEED + 2)
    held = [dict(zip(("color", "shape"), shapes.HELD_OUT[i % len(shapes.HELD_OUT)])) for i in range(n // 2)]
    for item, extra in zip(held, shapes.sample_attributes(len(held), generator)):
        item.update(size=extra["size"], position=extra["position"])
    held_prompts = [shapes.caption(item) for item in held]
    red = ["a red shape"] * (n // 2)
    red_images = generate(red, EVAL_SEED + 4)
    return {
        "guidance_scale": guidance_scale,
        "num_inference_steps": num_inference_steps,
        "full_prompts": metrics.adherence(generate(full, EVAL_SEED + 3), full),
        "held_out_pairs": metrics.adherence(generate(held_prompts, EVAL_SEED + 5), held_prompts),
        "a_red_shape": {
            "adherence": metrics.adherence(red_images, red),
            "shape_fractions": metrics.diversity(red_images, "shape")["fractions"],
        },
    }


def parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def train_all(
    out_dir="runs/tiny-sd",
    recipe: Recipe | None = None,
    resume=False,
    progress=True,
    device="cpu",
    threads: int | None = None,
    evaluate: bool = True,
    parts=("vae", "text", "unet"),
    distributed=None,
) -> Path:
    """Run the recipe (or some of its parts), save the weights and manifest in <out_dir>/weights.

    Parts not in `parts` are loaded from <out_dir>/weights (they must have been trained before).
    distributed: a `DistributedContext` (torchrun): each rank trains on its share of every batch
    (the recipe's batch sizes are global), and only rank 0 writes weights, manifest and logs.
    Returns the weights folder, loadable with `sdedu.weights.load_pretrained(path)`.
    """
    from sdedu.weights import load_component

    recipe = recipe or Recipe()
    threads = set_threads(threads)
    main = distributed is None or distributed.is_main
    world_size = distributed.world_size if distributed is not None else 1
    out_dir = Path(out_dir)
    weights = out_dir / "weights"
    if main:
        update_manifest(
            weights,
            recipe=_jsonable(asdict(recipe)),
            seed=recipe.seed,
            threads=threads,
            schedule=recipe.schedule,
            tokenizer={"max_length": recipe.text.max_length},
            torch_version=torch.__version__,
            world_size=world_size,
        )
    recipe = per_rank_recipe(recipe, world_size, parts)  # each rank's share of every batch
    timings, cpu = {}, {}  # wall-clock and CPU seconds per part
    if "vae" in parts:
        vae, info = train_vae(recipe, out_dir, resume, progress, device, distributed)
        if main:
            save_component(vae, "vae", weights, {"training": info})
        timings["vae"], cpu["vae"] = info["train_seconds"], info["cpu_seconds"]
    elif "unet" in parts:
        vae = load_component("vae", weights, device)
    if "text" in parts:
        text_encoder, info = train_text_encoder(recipe, out_dir, resume, progress, device, distributed)
        if main:
            save_component(text_encoder, "text_encoder", weights, {"training": info})
        timings["text_encoder"], cpu["text_encoder"] = info["train_seconds"], info["cpu_seconds"]
    elif "unet" in parts:
        text_encoder = load_component("text_encoder", weights, device)
    if "unet" in parts:
        unet, info = train_unet(recipe, vae, text_encoder, out_dir, resume, progress, device, distributed)
        if main:
            save_component(unet, "unet", weights, {"training": info})
        timings["unet"], cpu["unet"] = info["train_seconds"], info["cpu_seconds"]
        if evaluate and main:
            from sdedu.pipeline import TinyStableDiffusion

            t0 = time.perf_counter()
            pipe = TinyStableDiffusion(
                Tokenizer(max_length=recipe.text.max_length),
                text_encoder,
                vae,
                unet,
                schedule_from_settings(recipe.schedule),
                device=device,
            )
            update_manifest(weights, metrics=evaluate_generation(pipe), evaluation_seconds=time.perf_counter() - t0)
    if not main:
        return weights
    manifest = update_manifest(weights)
    for key, new in (("training_seconds", timings), ("training_cpu_seconds", cpu)):
        recorded = manifest.get(key, {})
        recorded.update(new)
        recorded["total"] = sum(v for k, v in recorded.items() if k != "total")
        update_manifest(weights, **{key: recorded})
    return weights


def per_rank_recipe(recipe: Recipe, world_size: int, parts=("vae", "text", "unet")) -> Recipe:
    """The recipe each of `world_size` data-parallel ranks runs: the batches of `parts` divided by it.

    Raises ValueError when the world size does not divide a global batch size.
    """
    if world_size == 1:
        return recipe
    names = {"vae": "vae_batch_size", "text": "text_batch_size", "unet": "unet_batch_size"}
    return replace(
        recipe,
        **{names[p]: local_batch_size(getattr(recipe, names[p]), world_size, names[p]) for p in parts if p in names},
    )


def _sub(out_dir, name):
    return None if out_dir is None else Path(out_dir) / name


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
