"""Every typical wrong implementation of every exercise is rejected, with a useful hint.

Each entry: (item, a wrong answer, the exception it must raise, a keyword of the message).
The right answers are checked too, so that a check that rejects everything cannot pass here.
"""

import copy
import statistics
import time

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from exercise_catalogue import assert_passes, assert_rejected, mutants, right_answers, wrong_answers

from sdedu.grading import ExerciseFailed, ExerciseIncomplete, check

# ---- 01 forward diffusion ------------------------------------------------------------------------


def _ab(alpha_bar, t):
    return alpha_bar[t].reshape(-1, 1, 1, 1)


def q_sample(x0, t, alpha_bar, noise):
    ab = _ab(alpha_bar, t)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


FORWARD_WRONG = {
    "no square roots": (lambda x0, t, a, n: _ab(a, t) * x0 + (1 - _ab(a, t)) * n, "square root"),
    "no square root on the noise": (lambda x0, t, a, n: _ab(a, t).sqrt() * x0 + (1 - _ab(a, t)) * n, "square root"),
    "no square root on x0": (lambda x0, t, a, n: _ab(a, t) * x0 + (1 - _ab(a, t)).sqrt() * n, "square root"),
    "coefficients swapped": (lambda x0, t, a, n: (1 - _ab(a, t)).sqrt() * x0 + _ab(a, t).sqrt() * n, "swapped"),
    "noise subtracted": (lambda x0, t, a, n: _ab(a, t).sqrt() * x0 - (1 - _ab(a, t)).sqrt() * n, "sign"),
    "t - 1": (lambda x0, t, a, n: q_sample(x0, t - 1, a, n), "off by one"),
    "t + 1": (lambda x0, t, a, n: q_sample(x0, t + 1, a, n), "off by one"),
    "t[0] for the batch": (lambda x0, t, a, n: q_sample(x0, t[:1].expand_as(t), a, n), "own timestep"),
    "no reshape": (lambda x0, t, a, n: a[t].sqrt() * x0 + (1 - a[t]).sqrt() * n, "reshape"),
    "fresh noise": (lambda x0, t, a, n: q_sample(x0, t, a, torch.randn_like(x0)), "noise"),
    "in place": (lambda x0, t, a, n: x0.mul_(_ab(a, t).sqrt()).add_((1 - _ab(a, t)).sqrt() * n), "in place"),
    "last alpha_bar": (lambda x0, t, a, n: a[-1].sqrt() * x0 + (1 - a[-1]).sqrt() * n, "timesteps t"),
}

# ---- 02 reverse diffusion ------------------------------------------------------------------------


def ddpm_step(
    x_t,
    t,
    eps_pred,
    betas,
    alpha_bar,
    noise,
    *,
    noise_at_zero=False,
    var=None,
    scale=None,
    coef=None,
    sign=-1,
    index=None,
):
    i = t if index is None else index
    beta = betas[i]
    alpha = 1 - beta
    c = beta / (1 - alpha_bar[i]).sqrt() if coef is None else coef(beta, alpha, alpha_bar[i])
    mean = (x_t + sign * c * eps_pred) / (alpha.sqrt() if scale is None else scale(alpha, alpha_bar[i]))
    if t == 0 and not noise_at_zero:
        return mean
    variance = beta if var is None else var(beta, alpha_bar, t)
    return mean + variance.sqrt() * noise


def _beta_tilde(beta, alpha_bar, t):
    prev = alpha_bar[t - 1] if t > 0 else torch.ones(())
    return (1 - prev) / (1 - alpha_bar[t]) * beta


REVERSE_WRONG = {
    "noise added at the last step": (lambda *a: ddpm_step(*a, noise_at_zero=True), "t == 0"),
    "never any noise": (lambda *a: ddpm_step(*a, var=lambda b, ab, t: torch.zeros(())), "noise"),
    "beta tilde variance": (lambda *a: ddpm_step(*a, var=_beta_tilde), "beta tilde"),
    "sigma = beta": (lambda *a: ddpm_step(*a, var=lambda b, ab, t: b**2), "standard deviation"),
    "alpha_bar in 1/sqrt(alpha)": (lambda *a: ddpm_step(*a, scale=lambda al, ab: ab.sqrt()), "alpha_t = 1 - beta_t"),
    "alphas instead of alpha_bar": (
        lambda *a: ddpm_step(*a, coef=lambda b, al, ab: b / (1 - al).sqrt()),
        "alpha_bar_t",
    ),
    "no square root in the eps coefficient": (
        lambda *a: ddpm_step(*a, coef=lambda b, al, ab: b / (1 - ab)),
        "square root",
    ),
    "sign flipped": (lambda *a: ddpm_step(*a, sign=+1), "sign"),
    "no 1/sqrt(alpha)": (lambda *a: ddpm_step(*a, scale=lambda al, ab: torch.ones(())), "1/sqrt(alpha_t)"),
    "off by one": (lambda x_t, t, e, b, ab, n: ddpm_step(x_t, t, e, b, ab, n, index=t - 1), "off by one"),
    "in place": (
        lambda x_t, t, e, b, ab, n: (
            x_t.sub_(b[t] / (1 - ab[t]).sqrt() * e).div_((1 - b[t]).sqrt()).add_(b[t].sqrt() * n if t > 0 else 0)
        ),
        "in place",
    ),
    "fresh noise": (lambda x_t, t, e, b, ab, n: ddpm_step(x_t, t, e, b, ab, torch.randn_like(n)), "noise"),
}

# ---- 04 training -----------------------------------------------------------------------------------


def make_training_step(
    *,
    t_low=0,
    t_high_offset=0,
    signal=lambda ab: ab.sqrt(),
    noise_coef=lambda ab: (1 - ab).sqrt(),
    target="noise",
    zero_grad=True,
    backward=True,
    step=True,
    reduction="mean",
    item=True,
    t_float=False,
    index_shift=0,
    model_input="x_t",
    loss="mse",
):
    def training_step(model, x0, alpha_bar, optimizer, generator=None):
        B, T = x0.shape[0], alpha_bar.shape[0]
        t = torch.randint(t_low, T + t_high_offset, (B,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        ab = alpha_bar[(t + index_shift).clamp(0, T - 1)].reshape(B, 1)
        x_t = signal(ab) * x0 + noise_coef(ab) * noise
        eps_pred = model(x0 if model_input == "x0" else x_t, t.float() if t_float else t)
        goal = {"noise": noise, "x0": x0, "x_t": x_t}[target]
        value = F.mse_loss(eps_pred, goal, reduction=reduction) if loss == "mse" else F.l1_loss(eps_pred, goal)
        if zero_grad:
            optimizer.zero_grad()
        if backward:
            value.backward()
        if step:
            optimizer.step()
        return value.item() if item else value

    return training_step


TRAINING_WRONG = {
    "no square root on the noise": (make_training_step(noise_coef=lambda ab: 1 - ab), "square root"),
    "no square roots": (make_training_step(signal=lambda ab: ab, noise_coef=lambda ab: 1 - ab), "square root"),
    "coefficients swapped": (
        make_training_step(signal=lambda ab: (1 - ab).sqrt(), noise_coef=lambda ab: ab.sqrt()),
        "swapped",
    ),
    "predicts x0": (make_training_step(target="x0"), "predict the noise"),
    "target x_t": (make_training_step(target="x_t"), "not x_t"),
    "model sees x0": (make_training_step(model_input="x0"), "noisy x_t"),
    "t never 0": (make_training_step(t_low=1), "t = 0"),
    "randint upper bound T-1": (make_training_step(t_high_offset=-1), "exclusive"),
    "float t": (make_training_step(t_float=True), "int64"),
    "no zero_grad": (make_training_step(zero_grad=False), "zero_grad"),
    "no optimizer step": (make_training_step(step=False), "optimizer.step"),
    "no backward": (make_training_step(backward=False), "backward"),
    "summed loss": (make_training_step(reduction="sum"), "mean"),
    "returns the tensor": (make_training_step(item=False), ".item()"),
    "alpha_bar[t - 1]": (make_training_step(index_shift=-1), "off by one"),
    "L1 loss": (make_training_step(loss="l1"), "mean squared error"),
}


def train(model, data, alpha_bar, steps, batch_size=128, lr=3e-3, generator=None, *, fresh_copy=False, last_only=False):
    target = copy.deepcopy(model) if fresh_copy else model
    optimizer = torch.optim.Adam(target.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        index = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
        losses.append(make_training_step()(target, data[index], alpha_bar, optimizer, generator))
    return losses[-1] if last_only else losses


LOOP_WRONG = {
    "returns the last loss": (lambda *a: train(*a, last_only=True), "list"),
    "trains a copy": (lambda *a: train(*a, fresh_copy=True), "did not change"),
    "ignores lr (0)": (lambda m, d, ab, s, b, lr, g: train(m, d, ab, s, b, 0.0, g), "did not change"),
    "tensors, not floats": (lambda *a: [torch.tensor(v) for v in train(*a)], "finite float"),
}

# ---- 07 distributed ---------------------------------------------------------------------------------


def average_gradients(model):
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= dist.get_world_size()


def summed_gradients(model):
    for p in model.parameters():
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def reduced_copies(model):
    for p in model.parameters():
        dist.all_reduce(p.grad.clone(), op=dist.ReduceOp.SUM)
        p.grad /= dist.get_world_size()


def broadcast_rank0(model):
    for p in model.parameters():
        dist.broadcast(p.grad, src=0)


def divided_twice(model):
    for p in model.parameters():
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= dist.get_world_size() ** 2


def only_rank0_reduces(model):
    if dist.get_rank() == 0:
        for p in model.parameters():
            dist.all_reduce(p.grad)


def stub_average_gradients(model):
    """Average the gradients."""
    # YOUR CODE HERE
    raise NotImplementedError()


DISTRIBUTED_WRONG = {
    "summed, not averaged": (summed_gradients, "not averaged"),
    "all-reduce of a copy": (reduced_copies, "exchanged"),
    "broadcast from rank 0": (broadcast_rank0, "broadcast"),
    "divided twice": (divided_twice, "twice"),
    "collective on one rank only": (only_rank0_reduces, "same collective calls"),
}

# ---- 08 compression -----------------------------------------------------------------------------------


def quantize_int8(
    weight, *, divisor=127, per_channel=True, use_abs=True, rounding=True, cast=True, guard=True, clamp=True
):
    source = weight.abs() if use_abs else weight
    peak = source.amax(dim=1, keepdim=True) if per_channel else source.max().reshape(1, 1).expand(weight.shape[0], 1)
    scale = peak / divisor
    if guard:
        scale = scale.clamp(min=1e-12)
    q = weight / scale
    q = torch.round(q) if rounding else q
    q = q.clamp(-127, 127) if clamp else q
    return (q.to(torch.int8) if cast else q), scale


def magnitude_prune(
    weight, sparsity, *, by_value=False, largest=False, keep_fraction=False, k0_guard=True, scale_kept=1.0
):
    n = weight.numel()
    k = round((1 - sparsity if keep_fraction else sparsity) * n)
    if k == 0 and k0_guard:
        return weight.clone()
    key = weight if by_value else weight.abs()
    if largest:
        threshold = key.flatten().kthvalue(n - k).values if k < n else key.min() - 1
        return torch.where(key <= threshold, weight * scale_kept, torch.zeros_like(weight))
    threshold = key.flatten().kthvalue(k).values
    return torch.where(key > threshold, weight * scale_kept, torch.zeros_like(weight))


def prune_in_place(weight, sparsity):
    k = round(sparsity * weight.numel())
    if k:
        weight[weight.abs() <= weight.abs().flatten().kthvalue(k).values] = 0
    return weight


QUANTIZE_WRONG = {
    "one scale per tensor": (lambda w: quantize_int8(w, per_channel=False), "per output channel"),
    "truncation": (lambda w: quantize_int8(w, rounding=False), "round"),
    "float q": (lambda w: quantize_int8(w, cast=False), "int8"),
    "divide by 255": (lambda w: quantize_int8(w, divisor=255), "127"),
    "divide by 128": (lambda w: quantize_int8(w, divisor=128, clamp=False), "127"),
    "max without abs": (lambda w: quantize_int8(w, use_abs=False), "magnitude"),
    "zero row divides by zero": (lambda w: quantize_int8(w, guard=False), "zeros"),
    "scale of shape (out,)": (
        lambda w: (
            (lambda q, s: (q, s.flatten()))(*quantize_int8(w))
            if False
            else (torch.round(w / (w.abs().amax(dim=1) / 127).clamp(min=1e-12)).to(torch.int8), None)
        ),
        "keepdim",
    ),
}

PRUNE_WRONG = {
    "by value": (lambda w, s: magnitude_prune(w, s, by_value=True), "magnitude"),
    "prunes the largest": (lambda w, s: magnitude_prune(w, s, largest=True), "smallest"),
    "keeps the fraction": (lambda w, s: magnitude_prune(w, s, keep_fraction=True), "fraction"),
    "k = 0 not handled": (lambda w, s: magnitude_prune(w, s, k0_guard=False), "sparsity 0"),
    "in place": (prune_in_place, "in place"),
    "kept weights rescaled": (lambda w, s: magnitude_prune(w, s, scale_kept=2.0), "exactly"),
}

# ---- 09 mixed precision ----------------------------------------------------------------------------------


def autocast_inference(model, x):
    dtype = torch.bfloat16 if x.device.type == "cpu" else torch.float16
    with torch.inference_mode(), torch.autocast(device_type=x.device.type, dtype=dtype):
        return model(x)


def _converts_model(model, x):
    model.to(torch.bfloat16)
    with torch.no_grad():
        return model(x.to(torch.bfloat16))


def _with_grad(model, x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x)


def _fp16_on_cpu(model, x):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        return model(x)


def _cast_back(model, x):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(x).float()


def _no_autocast(model, x):
    with torch.no_grad():
        return model(x)


def _input_only(model, x):
    with torch.no_grad():
        return model(x.to(torch.bfloat16))


AUTOCAST_WRONG = {
    "converts the model": (_converts_model, "weights"),
    "autograd on": (_with_grad, "inference_mode"),
    "float16 on CPU": (_fp16_on_cpu, "bfloat16"),
    "casts back to float32": (_cast_back, "without converting"),
    "no autocast": (_no_autocast, "autocast was not active"),
    "casts only the input": (_input_only, "float32"),
}


def median_time(fn, repeats=10, warmup=2, *, reduce=statistics.median, skip_warmup=False, unit=1.0, total=False):
    for _ in range(0 if skip_warmup else warmup):
        fn()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - start)
    return unit * (sum(timings) if total else reduce(timings))


def _times_warmup_too(fn, repeats=10, warmup=2):
    timings = []
    for _ in range(warmup + repeats):
        start = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - start)
    return statistics.mean(timings)


TIMING_WRONG = {
    "mean": (lambda fn, r, w: median_time(fn, r, w, reduce=statistics.mean), "median"),
    "total": (lambda fn, r, w: median_time(fn, r, w, total=True), "total"),
    "milliseconds": (lambda fn, r, w: median_time(fn, r, w, unit=1000.0), "milliseconds"),
    "no warm-up": (lambda fn, r, w: median_time(fn, r, w, skip_warmup=True), "warmup"),
    "warm-up timed": (_times_warmup_too, "median"),
}

# ---- 11 interview -----------------------------------------------------------------------------------------


def frechet_distance(mu1, cov1, mu2, cov2):
    eig = torch.linalg.eigvals(cov1 @ cov2).real.clamp(min=0)
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * eig.sqrt().sum())


def sample(model, sampler, x_T, cond, uncond, guidance_scale, *, combine=None, step_result=True):
    x = x_T
    for t in sampler.timesteps:
        eps_cond, eps_uncond = model(x, t, cond), model(x, t, uncond)
        eps = (combine or (lambda c, u, s: u + s * (c - u)))(eps_cond, eps_uncond, guidance_scale)
        out = sampler.step(eps, t, x)
        x = out.x_prev if step_result else out
    return x


INTERVIEW_WRONG = {
    "seed: SD generates textures": ("interview_what_is_sd", {"a", "b", "c", "d"}, "generating textures"),
    "missing a true statement": ("interview_what_is_sd", "ad", "img2img"),
    "not letters": ("interview_what_is_sd", 3, "letters"),
    "unknown letter": ("interview_what_is_sd", "az", "not among"),
    "seed: a diffusion process + one network": ("interview_architecture", "cd", "stable diffusion process"),
    "seed: the process has parameters": ("interview_architecture", "abcd", "no parameters"),
    "the sampler has parameters": ("interview_architecture", "abce", "swapped without retraining"),
    "only the UNet is trained": ("interview_architecture", "c", "pixel"),
    "seed: forward from a condition image": ("interview_diffusion_process", "ae", "given condition image"),
    "forward starts from noise": ("interview_diffusion_process", "ce", "reverse"),
    "the prompt enters the forward process": ("interview_diffusion_process", "bde", "no condition"),
    "forgets the process is fixed": ("interview_diffusion_process", "b", "learned"),
    "UNet outputs the image": ("interview_unet_role", "a", "latent space"),
    "eps-MSE largest at t = 999": ("interview_training_inference", "d", "nearly exact"),
    "eps-MSE largest mid-way": ("interview_training_inference", "c", "less noise"),
    "eps-MSE the same at every t": ("interview_training_inference", "e", "difficulty"),
    "guidance adds variety": ("interview_guidance_diversity", "a", "narrow"),
    "guidance changes nothing": ("interview_guidance_diversity", "c", "changes the images"),
    "fewer steps are exact": ("interview_performance", "abce", "discretisation"),
    "int8 is exact": ("interview_performance", "abde", "approximation"),
    "batching changes the result": ("interview_performance", "ae", "batch of two"),
    "no new compositions": ("interview_challenges", "abcde", "compose"),
    "FID without the matrix sqrt": (
        "interview_quality",
        lambda m1, c1, m2, c2: float(
            ((m1 - m2) ** 2).sum() + torch.trace(c1) + torch.trace(c2) - 2 * torch.trace(c1 @ c2)
        ),
        "matrix square root",
    ),
    "FID with the distance not squared": (
        "interview_quality",
        lambda m1, c1, m2, c2: (
            frechet_distance(m1, c1, m2, c2) - float(((m1 - m2) ** 2).sum()) + float((m1 - m2).norm())
        ),
        "squared",
    ),
    "GAN and VAE swapped": (
        "interview_generative_families",
        {"gan": "b", "vae": "a", "diffusion": "c"},
        "discriminator",
    ),
    "guidance sign flipped": (
        "interview_minimal_code",
        lambda *a: sample(*a, combine=lambda c, u, s: u - s * (c - u)),
        "sign",
    ),
    "cond and uncond swapped": (
        "interview_minimal_code",
        lambda *a: sample(*a, combine=lambda c, u, s: c + s * (u - c)),
        "swapped",
    ),
    "guidance not applied": (
        "interview_minimal_code",
        lambda *a: sample(*a, combine=lambda c, u, s: c),
        "conditional model",
    ),
    "both calls with the prompt": (
        "interview_minimal_code",
        lambda m, smp, x, c, u, s: sample(m, smp, x, c, c, s),
        "uncond",
    ),
    "forgets .x_prev": ("interview_minimal_code", lambda *a: sample(*a, step_result=False), ".x_prev"),
    "seed: SD is a self-attention model": ("interview_seed_families", "abce", "self-attention models like SD"),
    "seed: the VAE is an alternative": ("interview_seed_families", "bcde", "not an alternative"),
    "SD is not a diffusion model": ("interview_seed_families", "ce", "called per image"),
    "seed: the write-up's code is fine": ("interview_seed_code", "d", "no package `stable_diffusion`"),
    "only torch.no_grad is missing": ("interview_seed_code", "e", "three lines"),
    "pickles are safe": ("interview_seed_code", "ac", "pickle"),
}

RIGHT_ANSWERS = [
    ("forward_diffusion", q_sample),
    ("reverse_diffusion", ddpm_step),
    ("training_step", make_training_step()),
    ("training_loop", train),
    ("quantize_int8", quantize_int8),
    ("magnitude_prune", magnitude_prune),
    ("autocast_inference", autocast_inference),
    ("benchmark_timing", median_time),
    ("interview_quality", frechet_distance),
    ("interview_minimal_code", sample),
    ("interview_what_is_sd", ["A", "c", "d"]),
    ("interview_architecture", "abc"),
    ("interview_diffusion_process", {"b", "e"}),
    ("interview_unet_role", "b"),
    ("interview_training_inference", "a"),
    ("interview_guidance_diversity", "B"),
    ("interview_performance", "a, b, e"),
    ("interview_challenges", "abce"),
    ("interview_generative_families", {"gan": "a", "vae": "b", "diffusion": "c"}),
    ("interview_seed_families", "bce"),
    ("interview_seed_code", "abc"),
]

CATALOGUE = (
    [("forward_diffusion", name, fn, kw) for name, (fn, kw) in FORWARD_WRONG.items()]
    + [("reverse_diffusion", name, fn, kw) for name, (fn, kw) in REVERSE_WRONG.items()]
    + [("training_step", name, fn, kw) for name, (fn, kw) in TRAINING_WRONG.items()]
    + [("training_loop", name, fn, kw) for name, (fn, kw) in LOOP_WRONG.items()]
    + [("quantize_int8", name, fn, kw) for name, (fn, kw) in QUANTIZE_WRONG.items()]
    + [("magnitude_prune", name, fn, kw) for name, (fn, kw) in PRUNE_WRONG.items()]
    + [("autocast_inference", name, fn, kw) for name, (fn, kw) in AUTOCAST_WRONG.items()]
    + [("benchmark_timing", name, fn, kw) for name, (fn, kw) in TIMING_WRONG.items()]
    + [(item, name, answer, kw) for name, (item, answer, kw) in INTERVIEW_WRONG.items()]
)


@right_answers(RIGHT_ANSWERS)
def test_right_answers_pass(item, answer, capsys):
    assert_passes(item, answer, capsys)


@wrong_answers(CATALOGUE)
def test_wrong_answers_are_rejected_with_a_useful_hint(item, name, answer, keyword):
    assert_rejected(item, name, answer, keyword)


def test_distributed_right_answer_and_stub(capsys):
    check("distributed_training", average_gradients)
    assert "\u2714 distributed_training: passed" in capsys.readouterr().out
    with pytest.raises(ExerciseIncomplete):
        check("distributed_training", stub_average_gradients)


def test_distributed_wrong_answers():
    """The well-behaved wrong versions share one pair of processes (starting them is the slow part)."""
    from sdedu.grading.checks_distributed import judge, run_data_parallel

    names = [name for name in DISTRIBUTED_WRONG if name != "collective on one rank only"]
    runs = run_data_parallel([DISTRIBUTED_WRONG[name][0] for name in names], steps=3)
    for name, run in zip(names, runs):
        verdict = judge(run, 3)
        assert verdict is not None, f"{name} was accepted"
        assert DISTRIBUTED_WRONG[name][1] in verdict[1], f"{name}: {verdict}"


def test_distributed_one_sided_collective_is_reported():
    with pytest.raises(ExerciseFailed, match="same collective calls"):
        check("distributed_training", only_rank0_reduces)


# ---- 03 the UNet's parts, 05 inference, 06 performance, 10 visualisation ------------------------------
# (the right answers and the wrong ones side by side; each wrong one names the idea it breaks)

import math  # noqa: E402

import numpy as np  # noqa: E402


def timestep_embedding(t, dim, *, order="cos", over=None, sign=-1.0, interleave=False, only_cos=False):
    half = dim // 2
    freqs = torch.exp(sign * math.log(10000) * torch.arange(half, dtype=torch.float32) / (over or half))
    args = t.float()[:, None] * freqs[None, :]
    if only_cos:
        return args.cos()
    parts = [args.cos(), args.sin()] if order == "cos" else [args.sin(), args.cos()]
    return torch.stack(parts, dim=-1).flatten(1) if interleave else torch.cat(parts, dim=-1)


def resblock_forward(
    block, x, temb, *, silu_temb=True, time_after=False, skip=True, act_first=False, broadcast=True, shortcut=True
):
    norm_act = (lambda n, h: n(F.silu(h))) if act_first else (lambda n, h: F.silu(n(h)))
    h = block.conv1(norm_act(block.norm1, x))
    shift = block.time_emb_proj(F.silu(temb) if silu_temb else temb)
    shift = shift[:, :, None, None] if broadcast else shift
    h = h if time_after else h + shift
    h = block.conv2(norm_act(block.norm2, h))
    h = h + shift if time_after else h
    if not skip:
        return h
    return (x if block.conv_shortcut is None or not shortcut else block.conv_shortcut(x)) + h


def cross_attention(attn, x, cond, *, scale=lambda d, h: math.sqrt(d), dim=-1, heads=None, keys_from_x=False):
    B, N, _ = x.shape
    source = x if keys_from_x else cond
    L, h = source.shape[1], heads or attn.num_heads
    q = attn.to_q(x).view(B, N, h, -1).transpose(1, 2)
    k = attn.to_k(source).view(B, L, h, -1).transpose(1, 2)
    v = attn.to_v(source).view(B, L, h, -1).transpose(1, 2)
    probs = (q @ k.transpose(-2, -1) / scale(q.shape[-1], h)).softmax(dim=dim)
    return attn.to_out((probs @ v).transpose(1, 2).reshape(B, N, -1))


def generate(
    pipe,
    prompts,
    steps,
    guidance_scale,
    seed,
    *,
    combine=None,
    sampler="ddim",
    set_steps=True,
    decode=True,
    x_prev=True,
    cache=None,
    batched=False,
    context_order="uncond-cond",
):
    if cache is None:
        cond, uncond = pipe.encode_prompt(prompts)
    else:
        cond, uncond = encode_cached(pipe, prompts, cache)
    B = len(prompts)
    generator = [torch.Generator().manual_seed(seed + i) for i in range(B)]  # one per image, as the pipeline
    z = torch.cat([torch.randn((1, 4, 8, 8), generator=g) for g in generator]).to(pipe.device)
    scheduler = pipe.make_sampler(sampler)
    if set_steps:
        scheduler.set_timesteps(steps)
    combine = combine or (lambda c, u, s: u + s * (c - u))
    with torch.no_grad():
        for t in scheduler.timesteps:
            if batched:
                context = torch.cat([uncond, cond]) if context_order == "uncond-cond" else torch.cat([cond, uncond])
                eps_uncond, eps_cond = pipe.unet(torch.cat([z, z]), t.expand(2 * B), context).chunk(2)
            else:
                eps_cond, eps_uncond = pipe.unet(z, t.expand(B), cond), pipe.unet(z, t.expand(B), uncond)
            out = scheduler.step(combine(eps_cond, eps_uncond, guidance_scale), t, z, generator=generator)
            z = out.x_prev if x_prev else out
    return pipe.decode_latents(z) if decode else z


def encode_cached(pipe, prompts, cache, *, key="prompt", empty="encode"):
    if key == "none":
        return pipe.encode_prompt(prompts)
    if key == "tuple":
        if tuple(prompts) not in cache:
            cache[tuple(prompts)] = pipe.encode_prompt(prompts)
        return cache[tuple(prompts)]
    missing = [p for p in dict.fromkeys(list(prompts) + [""]) if p not in cache]
    if missing:
        with torch.no_grad():
            cache.update(zip(missing, pipe.text_encoder(pipe.tokenizer(missing, device=pipe.device))))
    cond = torch.stack([cache[p] for p in prompts])
    uncond = cache[""].expand_as(cond) if empty == "encode" else torch.zeros_like(cond)
    return cond, uncond


def image_grid(images, ncols, *, column_major=False, transpose=False, channels_first=False, floor_rows=False):
    N, C, H, W = images.shape
    if transpose:
        images, H, W = images.transpose(2, 3), W, H
    rows = N // ncols if floor_rows else math.ceil(N / ncols)
    grid = np.zeros((rows * H, ncols * W, C), dtype=np.float32)
    for i, image in enumerate(images[: rows * ncols]):
        r, c = (i % rows, i // rows) if column_major else divmod(i, ncols)
        grid[r * H : (r + 1) * H, c * W : (c + 1) * W] = image.permute(1, 2, 0).numpy()
    return np.ascontiguousarray(grid.transpose(2, 0, 1)) if channels_first else grid


def word_attention_maps(probs, height, width, *, head=None, swap=False, norm="each", move_tokens=True):
    maps = probs.mean(dim=1) if head is None else probs[:, head]
    maps = maps.transpose(1, 2) if move_tokens else maps
    B = maps.shape[0]
    L = probs.shape[-1]
    maps = maps.reshape(B, L, width, height).transpose(2, 3) if swap else maps.reshape(B, L, height, width)
    if norm == "none":
        return maps
    peak = maps.amax() if norm == "global" else maps.amax(dim=(2, 3), keepdim=True)
    return maps / peak.clamp(min=1e-12)


SD_WRONG = {
    "timestep_embedding": {
        "sines first": (lambda t, d: timestep_embedding(t, d, order="sin"), "cosines first"),
        "interleaved": (lambda t, d: timestep_embedding(t, d, interleave=True), "interleave"),
        "exponent over dim": (lambda t, d: timestep_embedding(t, d, over=d), "i / half"),
        "rising frequencies": (lambda t, d: timestep_embedding(t, d, sign=1.0), "negative"),
        "cosines only": (lambda t, d: timestep_embedding(t, d, only_cos=True), "dim // 2 cosines"),
    },
    "resblock": {
        "no SiLU on temb": (lambda b, x, e: resblock_forward(b, x, e, silu_temb=False), "SiLU before time_emb_proj"),
        "time added after conv2": (
            lambda b, x, e: resblock_forward(b, x, e, time_after=True),
            "between the two convolutions",
        ),
        "no skip": (lambda b, x, e: resblock_forward(b, x, e, skip=False), "adds its input back"),
        "SiLU before the norm": (lambda b, x, e: resblock_forward(b, x, e, act_first=True), "normalise first"),
        "shift not broadcast": (lambda b, x, e: resblock_forward(b, x, e, broadcast=False), "[:, :, None, None]"),
        "no conv_shortcut": (lambda b, x, e: resblock_forward(b, x, e, shortcut=False), "conv_shortcut"),
    },
    "cross_attention": {
        "no scaling": (lambda a, x, c: cross_attention(a, x, c, scale=lambda d, h: 1.0), "1/sqrt(d_head)"),
        "scaled by the whole width": (
            lambda a, x, c: cross_attention(a, x, c, scale=lambda d, h: math.sqrt(d * h)),
            "one head's width",
        ),
        "softmax over the pixels": (lambda a, x, c: cross_attention(a, x, c, dim=-2), "over the keys"),
        "one head": (lambda a, x, c: cross_attention(a, x, c, heads=1), "num_heads"),
        "keys from the pixels": (lambda a, x, c: cross_attention(a, x, c, keys_from_x=True), "keys and values from"),
    },
    "guided_sampling": {
        "sign flipped": (lambda *a: generate(*a, combine=lambda c, u, s: u - s * (c - u)), "sign"),
        "cond and uncond swapped": (lambda *a: generate(*a, combine=lambda c, u, s: c + s * (u - c)), "swapped roles"),
        "no guidance": (lambda *a: generate(*a, combine=lambda c, u, s: c), "plain conditional"),
        "scales eps_cond": (lambda *a: generate(*a, combine=lambda c, u, s: s * c), "difference"),
        "DDPM sampler": (lambda *a: generate(*a, sampler="ddpm"), "DDIM"),
        "set_timesteps forgotten": (lambda *a: generate(*a, set_steps=False), "set_timesteps"),
        "latents not decoded": (lambda *a: generate(*a, decode=False), "decode_latents"),
        "forgets .x_prev": (lambda *a: generate(*a, x_prev=False), ".x_prev"),
    },
    "embedding_cache": {
        "keyed by the list": (lambda p, ps, c: encode_cached(p, ps, c, key="tuple"), "each prompt string"),
        "no cache": (lambda p, ps, c: encode_cached(p, ps, c, key="none"), "each prompt string"),
        "zeros for uncond": (lambda p, ps, c: encode_cached(p, ps, c, empty="zeros"), "empty prompt"),
    },
    "fast_sampling": {
        "two UNet calls per step": (
            lambda p, ps, n, s, seed, c: generate(p, ps, n, s, seed, cache=c),
            "batch the conditional",
        ),
        "halves in the wrong order": (
            lambda p, ps, n, s, seed, c: generate(
                p, ps, n, s, seed, cache=c, batched=True, context_order="cond-uncond"
            ),
            "swapped roles",
        ),
    },
    "image_grid": {
        "column-major": (lambda im, n: image_grid(im, n, column_major=True), "row by row"),
        "H and W transposed": (lambda im, n: image_grid(im, n, transpose=True), "permute"),
        "channels first": (lambda im, n: image_grid(im, n, channels_first=True), "channels last"),
        "last row dropped": (lambda im, n: image_grid(im, n, floor_rows=True), "ceil"),
    },
    "attention_maps": {
        "head 0 only": (lambda p, h, w: word_attention_maps(p, h, w, head=0), "all the heads"),
        "reshaped (W, H)": (lambda p, h, w: word_attention_maps(p, h, w, swap=True), "not (W, H)"),
        "one normalisation for all": (lambda p, h, w: word_attention_maps(p, h, w, norm="global"), "own maximum"),
        "not normalised": (lambda p, h, w: word_attention_maps(p, h, w, norm="none"), "maximum is 1"),
        "tokens not moved first": (lambda p, h, w: word_attention_maps(p, h, w, move_tokens=False), "transpose"),
    },
}

SD_RIGHT = [
    ("timestep_embedding", timestep_embedding),
    ("resblock", resblock_forward),
    ("cross_attention", cross_attention),
    ("guided_sampling", generate),
    ("embedding_cache", encode_cached),
    ("fast_sampling", lambda p, ps, n, s, seed, c: generate(p, ps, n, s, seed, cache=c, batched=True)),
    ("image_grid", image_grid),
    ("attention_maps", word_attention_maps),
]
SD_CATALOGUE = mutants(SD_WRONG)


@right_answers(SD_RIGHT)
def test_tiny_sd_right_answers_pass(item, answer, capsys):
    assert_passes(item, answer, capsys)


@wrong_answers(SD_CATALOGUE)
def test_tiny_sd_wrong_answers_are_rejected_with_a_useful_hint(item, name, answer, keyword):
    assert_rejected(item, name, answer, keyword)


# ---- 12 samplers as ODE solvers: one Euler step, one DPM-Solver++(2M) step ------------------------


def euler_step(x_t, t, t_next, eps_pred, alpha_bar, *, std=False, scale=True, back=True, wrap=False):
    ab = alpha_bar[t]
    ab_next = alpha_bar[t_next] if t_next >= 0 or wrap else torch.ones(())
    sigma = (lambda a: (1 - a).sqrt()) if std else (lambda a: ((1 - a) / a).sqrt())
    x = x_t / ab.sqrt() if scale else x_t
    x = x + (sigma(ab_next) - sigma(ab)) * eps_pred
    return x * ab_next.sqrt() if scale and back else x


def dpmpp_2m_step(
    x_t, t, t_next, x0_pred, alpha_bar, t_prev, x0_pred_prev, *, fallback=True, last=True, karras=False,
    no_alpha=False, first_order=False,
):  # fmt: skip
    if t_next == -1 and last:
        return x0_pred

    def ab_at(s):
        return alpha_bar[s] if s >= 0 else torch.ones(())

    def lam(s):
        return (ab_at(s).sqrt() / (1 - ab_at(s)).sqrt()).log()

    ab, ab_next = ab_at(t), ab_at(t_next)
    h = lam(t_next) - lam(t)
    std = (lambda a: ((1 - a) / a).sqrt()) if karras else (lambda a: (1 - a).sqrt())
    D = x0_pred
    if (x0_pred_prev is not None or not fallback) and not first_order:
        r = (lam(t) - lam(t_prev)) / h
        D = (1 + 1 / (2 * r)) * x0_pred - 1 / (2 * r) * x0_pred_prev
    return std(ab_next) / std(ab) * x_t - (1 if no_alpha else ab_next.sqrt()) * (torch.exp(-h) - 1) * D


ODE_RIGHT = [("euler_step", euler_step), ("dpmpp_2m_step", dpmpp_2m_step)]
ODE_WRONG = {
    "euler_step": {
        "sqrt(1 - alpha_bar) as sigma": (lambda *a: euler_step(*a, std=True), "sigma vs alpha_bar"),
        "no input scaling": (lambda *a: euler_step(*a, scale=False), "missing input scaling"),
        "not scaled back": (lambda *a: euler_step(*a, back=False), "sqrt(alpha_bar_next) at the end"),
        "alpha_bar[-1] at the last step": (lambda *a: euler_step(*a, wrap=True), "t_next = -1 is not an index"),
    },
    "dpmpp_2m_step": {
        "Karras sigma in the ratio": (lambda *a: dpmpp_2m_step(*a, karras=True), "sigma vs alpha_bar"),
        "no alpha_next on D": (lambda *a: dpmpp_2m_step(*a, no_alpha=True), "missing input scaling"),
        "no first-order fallback": (lambda *a: dpmpp_2m_step(*a, fallback=False), "first-order step"),
        "always first order": (lambda *a: dpmpp_2m_step(*a, first_order=True), "previous x0_pred"),
        "no last-step special case": (lambda *a: dpmpp_2m_step(*a, last=False), "land on the denoised estimate"),
    },
}
ODE_CATALOGUE = mutants(ODE_WRONG)


@right_answers(ODE_RIGHT)
def test_ode_sampler_right_answers_pass(item, answer, capsys):
    assert_passes(item, answer, capsys)


@wrong_answers(ODE_CATALOGUE)
def test_ode_sampler_wrong_answers_are_rejected_with_a_useful_hint(item, name, answer, keyword):
    assert_rejected(item, name, answer, keyword)
