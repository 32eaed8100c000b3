"""Teach a trained pipeline new words from a handful of captioned images: textual inversion, LoRA, or both.

    teach(pipe, images, captions, method="textual_inversion" | "lora" | "both", steps=None, seed=0)

returns a NEW pipeline that understands the captions' new words (the input pipeline is not changed).
Every method minimises the same denoising loss the UNet was trained with (Ho et al. 2020, eq. 14,
`sdedu.diffusion.noise_prediction_loss`), on the teaching images' latents and their captions, through
the shared training loop (`sdedu.training.loop.train`); they differ only in what may move:

    textual_inversion   the new words' embedding rows v* alone (Gal et al. 2023, section 3, eq. 2):
                        v* = argmin_v E || eps - eps_theta(z_t, t, c_theta(y with S* -> v)) ||^2;
                        the text encoder's other weights, old rows included, and the UNet stay bit-identical
    lora                a rank-r update W + (alpha / r) B A of the UNet's cross-attention key and value
                        projections (Hu et al. 2022, section 4.1; `sdedu.nn.lora`; the k/v choice of Custom
                        Diffusion, Kumari et al. 2023, section 3.1), merged into a copy of the UNet after
                        training; the new words keep their initial rows, which the LoRA learns to read
    both                the two at once (as diffusers' "pivotal tuning" trains an embedding with a LoRA)

Forgetting. A LoRA of every attention and feed-forward projection drifts the old prompts too: measured on 256
standard prompts with the same seeds before and after (`sdedu.bench.adapt_teach`), a diamond taught from 16 images
by "both" (200 steps, 64 prior images) took them from 0.996 to 0.938, and so did a LoRA of the cross-attention keys
and values alone: prior preservation did not keep them. Together with it, one more thing does:
    prior preservation  (Ruiz et al. 2023, "DreamBooth", section 3.3, eq. 2): every batch holds prior_images (64)
                        images the input pipeline generates for standard captions, and the loss is
                        L(new) + prior_weight * L(prior), so the LoRA is also asked to keep what the model did;
    protect_old         the k/v LoRA trains A (I - V V^T), V the subspace of the old captions' text contexts
                        (`sdedu.adapt.protect`): old prompts keep their keys and values by construction.
With the two (the defaults) the old prompts stayed at 0.996 (a change of 0.000) for orange and diamond, by lora and
both, while the new word reached 0.86 (lora) and 0.89 (both; 0.94 before) in 400 steps, 76-95 CPU seconds.
Textual inversion needs neither: nothing old can move.

Diffusers: `pipe.load_textual_inversion(...)` loads v* into a tokenizer and text encoder extended the
same way; `pipe.load_lora_weights(...)` loads (and `fuse_lora` merges) a LoRA of the same layers.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import torch
from torch import nn

from sdedu._checks import check_int_range, check_number_range, check_tensor, describe
from sdedu.adapt.protect import CROSS_ATTENTION_KV, old_context_basis, project_lora_inputs
from sdedu.adapt.vocabulary import extend_text_encoder, new_words
from sdedu.data import shapes
from sdedu.diffusion import noise_prediction_loss
from sdedu.nn.lora import inject_lora, lora_parameters, merge_lora
from sdedu.pipeline import TinyStableDiffusion
from sdedu.training.loop import TrainConfig, train

__all__ = ["METHODS", "DEFAULT_STEPS", "LEARNING_RATE", "LORA_TARGET", "PROTECT_OLD", "teach"]

METHODS = ("textual_inversion", "lora", "both")
#: Optimizer steps (batch BATCH_SIZE) when steps=None, and AdamW's peak learning rate, per method.
DEFAULT_STEPS = {"textual_inversion": 300, "lora": 400, "both": 400}
LEARNING_RATE = {"textual_inversion": 2e-2, "lora": 4e-3, "both": 1e-2}
BATCH_SIZE = 32
LORA_RANK = 4
PRIOR_IMAGES = 64
PRIOR_WEIGHT = 1.0
LORA_TARGET = CROSS_ATTENTION_KV  # sdedu.nn.lora.DEFAULT_TARGET: every attention and feed-forward projection
PROTECT_OLD = 0.999  # the share of the old contexts' energy in V (43 of 64 dimensions for the shipped model)


def teach(
    pipe: TinyStableDiffusion,
    images: torch.Tensor,
    captions: Sequence[str],
    method: str = "textual_inversion",
    steps: int | None = None,
    seed: int = 0,
    words: Sequence[str] | None = None,
    rank: int = LORA_RANK,
    batch_size: int = BATCH_SIZE,
    prior_images: int = PRIOR_IMAGES,
    prior_weight: float = PRIOR_WEIGHT,
    target: Sequence[str] = LORA_TARGET,
    protect_old: float = PROTECT_OLD,
    lr: float | None = None,
    progress: bool = True,
) -> TinyStableDiffusion:
    """A new pipeline that understands the captions' new words, learned from the images.

    Args:
        pipe: a trained TinyStableDiffusion (not changed; the new pipeline shares its VAE and schedule).
        images: (N, 3, 32, 32) in [0, 1], N >= 1: the teaching images.
        captions: N captions, one per image, using the new words ("a large orange circle in the center").
        method: "textual_inversion", "lora" or "both" (see the module docstring).
        steps: optimizer steps (None: DEFAULT_STEPS[method]); each draws batch_size of the images
            (with replacement), a timestep and noise for each.
        seed: the same seed gives the same new pipeline (initial rows, LoRA's A, every batch and noise).
        words: the new words (None: every caption word outside the vocabulary); each must be new.
        rank: r of the LoRA update (methods "lora" and "both").
        batch_size: images per step (half of them prior images when prior preservation is on).
        prior_images: with "lora" and "both", train on this many of the input pipeline's own images of
            standard captions too (prior preservation, see the module docstring; 0: off).
        rank, prior_images, prior_weight, target and protect_old shape the UNet's LoRA: with
            "textual_inversion" (which trains embedding rows only) a value other than the default is an error.
        prior_weight: lambda of DreamBooth's eq. 2, the prior images' loss weight against the new ones'.
        target: the UNet's linear layers the LoRA adapts (`sdedu.nn.lora.inject_lora`'s rule).
        protect_old: > 0: the cross-attention key/value LoRAs train A (I - V V^T), V the old captions'
            context subspace holding this share of their energy (`sdedu.adapt.protect`); 0: off.
        lr: AdamW's peak learning rate, > 0 (None: LEARNING_RATE[method]).
        progress: show a progress bar.
    Returns:
        a TinyStableDiffusion whose tokenizer knows the new words; `manifest["adaptation"]` says how it
        was taught (method, words, steps, seconds, training's CPU seconds, trained parameters, final loss).
    """
    if not isinstance(pipe, TinyStableDiffusion):
        raise TypeError(f"pipe must be a sdedu TinyStableDiffusion; got {describe(pipe)}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {describe(method)}")
    images = _check_images(images, pipe.image_size)
    captions = _check_captions(captions, images.shape[0])
    steps = DEFAULT_STEPS[method] if steps is None else check_int_range("steps", steps, 1, 10**6)
    seed = check_int_range("seed", seed, 0, 2**40)
    batch_size = check_int_range("batch_size", batch_size, 1, 10**5)
    prior_images = check_int_range("prior_images", prior_images, 0, 10**5)
    prior_weight = check_number_range("prior_weight", prior_weight, 0.0)
    protect_old = check_number_range("protect_old", protect_old, 0.0, 1.0)
    lr = LEARNING_RATE[method] if lr is None else check_number_range("lr", lr, 0.0)
    if lr == 0:
        raise ValueError("lr must be > 0 (a learning rate of 0 trains nothing); got 0")
    if method == "textual_inversion":
        _check_unused_by_textual_inversion(
            rank=(rank, LORA_RANK),
            prior_images=(prior_images, PRIOR_IMAGES),
            prior_weight=(prior_weight, PRIOR_WEIGHT),
            target=(tuple(target), tuple(LORA_TARGET)),
            protect_old=(protect_old, PROTECT_OLD),
        )
    words = new_words(pipe.tokenizer, captions, words)
    t0 = time.perf_counter()

    # 1. The copies that change: the tokenizer and text encoder with the new rows, the UNet (LoRA-wrapped).
    tokenizer, text_encoder = extend_text_encoder(pipe.tokenizer, pipe.text_encoder, words, seed)
    unet = copy.deepcopy(pipe.unet).requires_grad_(False)
    trained = []
    if method in ("textual_inversion", "both"):
        embedding = text_encoder.token_embedding.weight.requires_grad_(True)  # (V + k, D)
        trained_rows = torch.zeros(embedding.shape[0], 1, device=embedding.device)
        trained_rows[len(pipe.tokenizer) :] = 1.0
        hook = embedding.register_hook(lambda grad: grad * trained_rows)  # old rows get zero gradient: never move
        trained.append(embedding)
    if method in ("lora", "both"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # LoRA's A is drawn from the global generator
            inject_lora(unet, rank=rank, alpha=float(rank), target=target)
        if protect_old > 0:
            basis = old_context_basis(pipe.tokenizer, pipe.text_encoder, protect_old)  # (D, k)
            fold = project_lora_inputs(unet, basis)
        trained += lora_parameters(unet)

    # 2. The teaching data, encoded once: latents z_0 (N, 4, 8, 8) and token ids (N, L); the prior set likewise.
    z0 = pipe.encode_images(images)
    ids = tokenizer(list(captions), device=pipe.device)
    prior = method != "textual_inversion" and prior_images > 0
    if prior:
        prior_z0, prior_ids = _prior_set(pipe, tokenizer, prior_images, seed)
    model = nn.ModuleDict({"text_encoder": text_encoder, "unet": unet})

    n_new = batch_size - batch_size // 2 if prior else batch_size

    def denoising_loss(model, batch_z0, batch_ids, generator):
        cond = model["text_encoder"](batch_ids)  # (B, L, D)
        return noise_prediction_loss(model["unet"], batch_z0, pipe.schedule, generator=generator, cond=cond)

    def loss_fn(model, generator):  # DreamBooth's eq. 2: the new images' loss + lambda * the prior images' loss
        index = torch.randint(len(captions), (n_new,), generator=generator).to(pipe.device)
        loss = denoising_loss(model, z0[index], ids[index], generator)
        if prior:
            index = torch.randint(prior_images, (batch_size - n_new,), generator=generator).to(pipe.device)
            loss = loss + prior_weight * denoising_loss(model, prior_z0[index], prior_ids[index], generator)
        return loss

    # 3. The shared loop (AdamW, warm-up then cosine decay, gradient clipping), on the trained tensors alone.
    config = TrainConfig(steps=steps, lr=lr, warmup_steps=min(20, steps // 10), ema_decay=0.0, seed=seed)
    run = train(model, loss_fn, config, desc=f"teach ({method})", progress=progress, parameters=trained)

    # 4. The new pipeline: frozen, the LoRA merged into the UNet copy.
    if method != "lora":
        hook.remove()
    text_encoder.requires_grad_(False)
    trained_parameters = sum(p.numel() for p in lora_parameters(unet))
    trained_parameters += len(words) * text_encoder.config.width if method != "lora" else 0
    if method in ("lora", "both"):
        if protect_old > 0:
            fold()
        merge_lora(unet)
    unet.requires_grad_(False)
    taught = TinyStableDiffusion(tokenizer, text_encoder, pipe.vae, unet, pipe.schedule, device=pipe.device)
    taught.manifest = {
        **pipe.manifest,
        "adaptation": {
            "method": method,
            "words": list(words),
            "images": len(captions),
            "steps": steps,
            "seed": seed,
            "rank": rank if method != "textual_inversion" else None,
            "prior_images": prior_images if prior else 0,
            "prior_weight": prior_weight if prior else None,
            "target": list(target) if method != "textual_inversion" else None,
            "protect_old": protect_old if method != "textual_inversion" else None,
            "lr": lr,
            "trained_parameters": trained_parameters,
            "seconds": time.perf_counter() - t0,
            "train_cpu_seconds": run.cpu_seconds,
            "final_loss": run.final_loss,
        },
    }
    return taught


def _prior_set(pipe: TinyStableDiffusion, tokenizer, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n latents (n, 4, 8, 8) the input pipeline makes for standard full captions, and their ids (n, L)."""
    attributes = shapes.sample_attributes(n, torch.Generator().manual_seed(seed), exclude_held_out=True)
    prompts = [shapes.caption(a) for a in attributes]
    return pipe.encode_images(pipe(prompts, seed=seed)), tokenizer(prompts, device=pipe.device)


def _check_images(images, size: int) -> torch.Tensor:
    check_tensor("images", images, ndim=4, floating=True)
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image; got 0 (shape (0, ...))")
    if tuple(images.shape[1:]) != (3, size, size):
        raise ValueError(f"images must have shape (N, 3, {size}, {size}); got {describe(images)}")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"images must lie in [0, 1]; got values in [{low:.3g}, {high:.3g}]")
    return images.detach()


def _check_captions(captions, n: int) -> list[str]:
    if isinstance(captions, str) or not isinstance(captions, (list, tuple)):
        raise TypeError(f"captions must be a list of str, one per image; got {describe(captions)}")
    if not all(isinstance(c, str) for c in captions):
        raise TypeError(f"captions must be a list of str; got {[describe(c) for c in captions][:4]}")
    if len(captions) != n:
        raise ValueError(f"captions must have one caption per image: {n} images, {len(captions)} captions")
    return list(captions)


def _check_unused_by_textual_inversion(**given_and_default) -> None:
    """Refuse a LoRA-only argument (name=(given, default)) set away from its default with textual inversion."""
    for name, (given, default) in given_and_default.items():
        if given != default:
            raise ValueError(
                f"{name} is used by methods 'lora' and 'both' only: textual inversion trains the new words' "
                f"embedding rows, not the UNet; got {name}={given!r} with method='textual_inversion'"
            )
