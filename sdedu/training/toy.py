"""Train and sample the 2-D toy denoiser: the whole of diffusion in a few seconds.

Training is Algorithm 1 of Ho et al. 2020 on a point cloud: draw a batch of points x_0, a
timestep t and noise eps, and regress the MLP's eps_pred on eps (`noise_prediction_loss`).
Sampling is the reverse loop every sdedu pipeline shows: start from x_T ~ N(0, I) and apply
`sampler.step` once per timestep. `objective="flow"` trains the same MLP on flow matching
instead (the velocity eps - x_0 of the straight path, `sdedu.flow_matching`), sampled with
`FlowMatchEulerSampler`. With points in 2-D both fit in seconds on one CPU thread,
and every intermediate x_t can be drawn as a scatter plot.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from sdedu._checks import check_finite, check_int_range, check_number_range, check_tensor
from sdedu.diffusion import noise_prediction_loss
from sdedu.flow_matching import flow_matching_loss
from sdedu.models.mlp import MLPDenoiser, MLPDenoiserConfig
from sdedu.pipeline.loop import denoise
from sdedu.schedules import NoiseSchedule

__all__ = ["train_toy_denoiser", "sample_toy", "OBJECTIVES"]

#: What the toy model learns: eps (Ho et al. 2020), x_0 or v (Salimans & Ho 2022) on the schedule
#: (`noise_prediction_loss`'s prediction_type), or the flow's velocity eps - x_0 (Lipman et al. 2023).
OBJECTIVES = ("eps", "x0", "v", "flow")


def train_toy_denoiser(
    points: torch.Tensor,
    schedule: NoiseSchedule,
    steps: int = 3000,
    batch_size: int = 256,
    lr: float = 3e-3,
    model: MLPDenoiser | None = None,
    config: MLPDenoiserConfig | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    objective: str = "eps",
) -> tuple[MLPDenoiser, list[float]]:
    """Fit an `MLPDenoiser` to a point cloud with the simple loss (Ho et al. 2020, Algorithm 1).

    loss = || eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t) ||^2

    Adam with a cosine decay of the learning rate to 0, so that the last steps settle.

    Args:
        points: (N, D) training data (e.g. `sdedu.data.toy2d.make_moons(4000)`).
        schedule: the noise schedule the model is trained for.
        steps: optimiser steps.
        batch_size: points per step, drawn with replacement.
        lr: peak learning rate.
        model: a model to keep training; a fresh `MLPDenoiser(config)` when None.
        config: sizes of the fresh model (ignored when `model` is given).
        generator: randomness for batches, t and eps (seed it for a reproducible run).
        device: where to train (default: the model's device, else the CPU).
        progress: show a tqdm bar.
        objective: "eps" (the simple loss above, on `schedule`), "x0" or "v" (the same loss with
            x_0 or v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 as the target; sample with
            `prediction_type=objective`), or "flow" (`flow_matching_loss`:
            || v_theta((1 - t) x_0 + t eps, 1000 t) - (eps - x_0) ||^2, t logit-normal; schedule unused, may be None).

    Returns:
        (model in eval mode, list of the per-step losses).
    """
    check_tensor("points", points, ndim=2, floating=True)
    check_finite("points", points)
    if points.shape[0] < 1:
        raise ValueError(f"points must hold at least one point; got shape {tuple(points.shape)}")
    steps = check_int_range("steps", steps, 1, 10_000_000)
    batch_size = check_int_range("batch_size", batch_size, 1, 10_000_000)
    lr = check_number_range("lr", lr, 0.0, 10.0)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")
    if model is None:
        config = config or MLPDenoiserConfig(data_dim=points.shape[1])
        model = MLPDenoiser(config)
    if model.config.data_dim != points.shape[1]:
        raise ValueError(
            f"points must have shape (N, {model.config.data_dim}) to match the model; got {tuple(points.shape)}"
        )
    if device is None:
        device = next(model.parameters()).device
    model = model.to(device).train()
    points = points.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    lr_decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)

    losses = []
    for _ in tqdm(range(steps), desc="training the toy denoiser", disable=not progress):
        # 1. A batch of clean points x_0 (indices drawn on the generator's device).
        index = torch.randint(
            points.shape[0],
            (batch_size,),
            generator=generator,
            device=generator.device if generator is not None else points.device,
        )
        x0 = points[index.to(points.device)]  # (batch_size, D)
        # 2. t, eps, x_t and the mean squared error on eps (Algorithm 1, lines 3-5), or on the velocity.
        if objective == "flow":
            loss = flow_matching_loss(model, x0, generator=generator)
        else:
            loss = noise_prediction_loss(model, x0, schedule, generator=generator, prediction_type=objective)
        # 3. One gradient step.
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_decay.step()
        losses.append(loss.item())
    return model.eval(), losses


@torch.no_grad()
def sample_toy(
    model: torch.nn.Module,
    sampler,
    n: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    return_trajectory: bool = False,
):
    """Draw `n` points by running the reverse process with `sampler` (DDPM or DDIM).

    x_T ~ N(0, I); then the one denoising loop (`sdedu.pipeline.denoise`): for each t in
    sampler.timesteps, x_prev = sampler.step(model(x_t, t), t, x_t).
    Call `sampler.set_timesteps(...)` first to choose the number of steps.

    Args:
        model: eps-predictor, model(x_t (n, D), t int64 (n,)) -> (n, D) (or a velocity model with a
            `FlowMatchEulerSampler`, whose float timesteps it receives as they are).
        sampler: an object with `.timesteps` and `step(eps_pred, t, x_t, generator=None)`.
        n: number of points.
        generator: randomness for x_T and for the sampler's noise.
        device: where to sample (default: the model's device).
        return_trajectory: also return every intermediate x_t.

    Returns:
        x_0 (n, D); with `return_trajectory`, (x_0, trajectory (S + 1, n, D), timesteps (S,)) where
        trajectory[0] is x_T and trajectory[i + 1] is the sample after the step at timesteps[i].
    """
    n = check_int_range("n", n, 1, 10_000_000)
    parameter = next(model.parameters())
    device = parameter.device if device is None else torch.device(device)
    data_dim = model.config.data_dim
    # 1. Start from pure noise x_T ~ N(0, I), drawn on the generator's device.
    draw_device = generator.device if generator is not None else device
    x_t = torch.randn(n, data_dim, generator=generator, device=draw_device).to(device)  # (n, D)
    trajectory = [x_t.cpu()]
    timesteps = torch.as_tensor(sampler.timesteps).cpu()
    # 2-3. The one denoising loop (sdedu.pipeline.denoise): eps_pred = model(x_t, t), then the
    #      sampler's step towards x_0; the hook records every x_t.
    x_t = denoise(
        model,
        sampler,
        x_t,
        timesteps=timesteps,
        generator=generator,
        on_step=lambda i, t, x, x0_pred: trajectory.append(x.cpu()),
    )
    if return_trajectory:
        return x_t, torch.stack(trajectory), timesteps  # (S + 1, n, D)
    return x_t
