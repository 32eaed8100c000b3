"""The recipe that trains the tiny SD3 (an MM-DiT with rectified flow) on the frozen parts of the first model.

    python -m sdedu.train sd3 --out runs/tiny-sd3        (`train_sd3` from Python)

As Stable Diffusion 3 reuses a trained autoencoder and frozen text encoders, this recipe trains
only the MM-DiT (`sdedu.models.mmdit`); the VAE and the text encoder are those shipped with the
first model (`sdedu/weights`), loaded hash-checked and frozen. What changes from the UNet recipe
(`sdedu.training.parts.train_unet`) is the backbone and the objective, nothing else:

    z_0 = scale_factor * (mean + std * noise)      latents from a bank encoded once (as the UNet's)
    captions full or partial, then "" with p_uncond (conditioning dropout, for guidance)
    cond, pooled = text encoder's tokens and its pooled <end> vector (SD3 uses CLIP's pooled output too)
    loss = || v_theta(x_t, 1000 t, cond, pooled) - (eps - z_0) ||^2,  t ~ logit-normal(0, 1)
                                                   (`sdedu.flow_matching.flow_matching_loss`, SD3 eq. 19)

The same data (`recipe_data`), latent bank (`parts.latent_bank`), training loop (`loop.train`:
seeded per step, resumable, EMA) and evaluation (`evaluation.evaluate_generation`) as the UNet.
The weights folder holds `mmdit.safetensors` and a manifest that names the VAE and text encoder
it was trained with by their sha256 (`sdedu.pipeline.sd3` refuses others). At every checkpoint the
EMA model's adherence is measured at the pipeline's defaults and logged with the training time so far
(<out>/sd3/adherence.json, and the manifest's `training.adherence_log`); `training.time_to_target` is
the first checkpoint meeting `evaluation.ADHERENCE_TARGET`: the training time to the adherence target.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from sdedu._checks import check_int_range, check_number_range
from sdedu.flow_matching import TIME_SAMPLINGS, flow_matching_loss
from sdedu.models.mmdit import MMDiT, MMDiTConfig
from sdedu.models.text_encoder import Tokenizer
from sdedu.training.evaluation import AdherenceLog, evaluate_generation, time_to_target
from sdedu.training.loop import TrainConfig, train
from sdedu.training.parts import latent_bank
from sdedu.training.recipe_config import build_seeded
from sdedu.training.recipe_run import record_run, run_config, run_folders, training_info
from sdedu.weights import load_component, save_component, update_manifest

MODEL_NAME = "TinyStableDiffusion3"  # the manifest's "model" field: what a weights folder holds
ADHERENCE_LOG = "adherence.json"  # in <out>/sd3/: the EMA model's adherence at every checkpoint


@dataclass
class SD3Recipe:
    """Every setting of the tiny SD3's recipe (recorded in its weights manifest)."""

    seed: int = 0
    mmdit: MMDiTConfig = field(default_factory=MMDiTConfig)
    # 3600 steps and the UNet's EMA decay 0.999: "a red shape" needs them. The adherence target holds from step 1200,
    # but the squares of "a red shape" lag (800 images, seeds 0 and 1000): 2400 steps with decay 0.995 gave 0.13-0.17,
    # 4800 with 0.995 0.27 but circles 0.20-0.22; 3600 with 0.999 gives 0.24 for each shape (triangles 0.38).
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=3600, lr=1e-3, warmup_steps=100, ema_decay=0.999, checkpoint_every=400
        )
    )
    batch_size: int = 64
    latent_bank: int = 12_000
    # captions, as the UNet's recipe
    p_full: float = 0.5
    p_drop: float = 0.5
    p_uncond: float = 0.1
    # training times: SD3's logit-normal(m, s) (section 3.1). m = 0 measured best for the squares of "a red shape"
    # (100 images, 1600-2400 steps, decay 0.995): m = 0.5 (more high noise) 0.10, m = -0.5 (more low noise) 0.11,
    # m = 0 0.14-0.19. Its shape is set at high noise:
    # 21 Euler steps instead of 3 below t = 0.29 change 0 of 100 judged shapes, 20 instead of 5 above it change 20.
    time_sampling: str = "logit_normal"
    time_m: float = 0.0
    time_s: float = 1.0
    # full-prompt adherence at every checkpoint (the time to the adherence target), on `eval_prompts` prompts
    eval_prompts: int = 100

    def __post_init__(self):
        check_int_range("recipe.seed", self.seed, 0, 2**40)
        check_int_range("recipe.batch_size", self.batch_size, 1, 10**9)
        check_int_range("recipe.latent_bank", self.latent_bank, 1, 10**9)
        check_int_range("recipe.eval_prompts", self.eval_prompts, 2, 10**6)
        for name in ("p_full", "p_drop", "p_uncond"):
            check_number_range(f"recipe.{name}", getattr(self, name), 0.0, 1.0)
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"recipe.time_sampling must be one of {TIME_SAMPLINGS}; got {self.time_sampling!r}")

    def with_steps(self, steps: int | None = None, seed: int | None = None, bf16: bool = False) -> SD3Recipe:
        """A copy with the step count (smoke runs), seed and bf16 set, as `Recipe.with_steps`."""
        seed = self.seed if seed is None else seed
        return replace(self, seed=seed, train=run_config(self.train, steps, seed, bf16))


def text_conditioning(text_encoder, tokenizer, captions: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """The two text inputs of the MM-DiT: token embeddings cond (B, L, D) and pooled (B, P).

    pooled is the text encoder's own pooled output: the <end> token's state through its
    contrastive projection (`TextEncoder.pooled`), the analogue of the CLIP pooled embedding SD3 uses.
    """
    ids = tokenizer(captions, device=device)  # (B, L)
    return text_encoder(ids), text_encoder.pooled(ids)


def train_sd3(
    out_dir="runs/tiny-sd3",
    recipe: SD3Recipe | None = None,
    base=None,
    resume=False,
    progress=True,
    device="cpu",
    threads: int | None = None,
    evaluate: bool = True,
) -> Path:
    """Train the MM-DiT on the frozen VAE and text encoder of `base` (default: the shipped first model).

    Writes <out_dir>/sd3/ (loss.csv, checkpoint) and <out_dir>/weights/ (mmdit.safetensors +
    manifest.json, loadable with `TinyStableDiffusion3.from_pretrained(<out_dir>/weights)`).
    Returns the weights folder.
    """
    from sdedu.pipeline.sd3 import TinyStableDiffusion3  # the evaluation samples through the pipeline

    recipe = recipe or SD3Recipe()
    out_dir, weights, base, threads = run_folders(out_dir, base, threads)
    device = torch.device(device)
    t0, cpu0 = time.perf_counter(), time.process_time()
    # 1. The frozen parts of the first model, hash-checked, and a latent bank encoded once.
    vae = load_component("vae", base, device)
    text_encoder = load_component("text_encoder", base, device).requires_grad_(False)
    tokenizer = Tokenizer(max_length=text_encoder.config.max_length)
    bank = latent_bank(vae, recipe.latent_bank, recipe.seed + 2, device)
    bank_seconds, bank_cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    mmdit = build_seeded(lambda: MMDiT(recipe.mmdit), recipe.seed, "sd3").to(device)

    def loss_fn(model, generator):
        # 1-2. Latents z_0 (B, 4, 8, 8) of random bank images; captions, partial or full, some "" (for guidance).
        _, z0, captions = bank.batch(recipe.batch_size, generator, recipe.p_full, recipe.p_drop, recipe.p_uncond)
        with torch.no_grad():
            cond, pooled = text_conditioning(text_encoder, tokenizer, captions, device)  # frozen
        # 3. Conditional flow matching on the latents (SD3's objective).
        return flow_matching_loss(
            model,
            z0,
            generator=generator,
            time_sampling=recipe.time_sampling,
            m=recipe.time_m,
            s=recipe.time_s,
            cond=cond,
            pooled=pooled,
        )

    # 4. At every checkpoint, the EMA model's adherence (the evaluation's time is not training time).
    def measure(model):
        pipe = TinyStableDiffusion3(tokenizer, text_encoder, vae, model, device=device)
        return evaluate_generation(
            pipe,
            n=recipe.eval_prompts,
            guidance_scale=pipe.default_guidance_scale,
            num_inference_steps=pipe.default_steps,
        )

    log = AdherenceLog(measure, out_dir / "sd3" / ADHERENCE_LOG, (bank_seconds, bank_cpu_seconds), resume)

    run = train(
        mmdit,
        loss_fn,
        recipe.train,
        out_dir / "sd3",
        resume=resume,
        desc="MM-DiT",
        progress=progress,
        settings={k: v for k, v in asdict(recipe).items() if k != "train"},
        on_checkpoint=log if evaluate else None,
    )
    info = {**training_info(run, bank_seconds, bank_cpu_seconds), "latent_bank_seconds": bank_seconds}
    if evaluate:
        info["adherence_log"] = log.rows  # seconds, cpu_seconds: training time to each checkpoint, the bank included
        info["time_to_target"] = time_to_target(log.rows)
    save_component(run.ema_model, "mmdit", weights, {"training": info})
    record_run(
        weights,
        recipe,
        base,
        ("vae", "text_encoder"),
        threads,
        info,
        model=MODEL_NAME,
        tokenizer={"max_length": tokenizer.max_length},
    )
    if evaluate:
        t1 = time.perf_counter()
        pipe = TinyStableDiffusion3(tokenizer, text_encoder, vae, run.ema_model, device=device)
        metrics = evaluate_generation(
            pipe, guidance_scale=pipe.default_guidance_scale, num_inference_steps=pipe.default_steps
        )
        update_manifest(weights, metrics=metrics, evaluation_seconds=time.perf_counter() - t1)
    return weights
