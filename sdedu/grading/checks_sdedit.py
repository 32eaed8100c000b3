"""Check for exercise 05's second item: which timesteps SDEdit runs for a given strength.

The right answer is the library's own `sdedu.pipeline.last_timesteps(sampler, n, strength)`, the
function `TinyStableDiffusion.img2img` and `.inpaint` call (Meng et al. 2022): of the n sampler
timesteps, only the last round(strength * n) run, and the image is noised to the first of them,
t_start = timesteps[start_index].

    kept = round(strength * n);   start_index = n - kept;   run timesteps[start_index:]

(diffusers' img2img `get_timesteps` truncates instead, in its own names, where t_start is this index:
init_timestep = min(int(num_inference_steps * strength), num_inference_steps),
t_start = max(num_inference_steps - init_timestep, 0).) The cases are fixed (n, strength) pairs on a DDIM sampler:
a typical strength, one where rounding and truncating differ, strength 0 (nothing runs: the
`timesteps[-0:]` trap) and strength 1 (everything runs).
"""

from __future__ import annotations

import math

from sdedu.grading.expect import expect_tensor
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial
from sdedu.pipeline import last_timesteps
from sdedu.samplers.ddim import DDIMSampler
from sdedu.schedules import NoiseSchedule

ITEM = "sdedit_timesteps"
ROUND_HINT = (
    "keep round(strength * n) steps, rounded to the nearest integer: int() truncates (that is diffusers' "
    "get_timesteps; sdedu's pipeline rounds) and math.ceil rounds up."
)


def sdedit_mistakes(timesteps, strength):
    """Known wrong versions of sdedit_timesteps on one case: [(make_result, hint), ...]."""
    n = len(timesteps)
    kept = round(strength * n)
    return [
        (
            lambda: timesteps[-kept:],
            "timesteps[-0:] is the whole tensor, not an empty one: when round(strength * n) is 0 nothing runs "
            "(slice from n - kept instead).",
        ),
        (
            lambda: timesteps[n - round((1 - strength) * n) :],
            "strength is inverted: strength is the fraction of the chain that runs (1: every step, from pure "
            "noise; 0: none, the image comes back unchanged).",
        ),
        (
            lambda: timesteps[:kept],
            "SDEdit skips the noisiest steps, at the start of the chain: keep the *last* round(strength * n) "
            "timesteps (sampler timesteps run from noisy to clean).",
        ),
        (lambda: timesteps[n - int(strength * n) :], ROUND_HINT),
        (lambda: timesteps[n - math.ceil(strength * n) :], ROUND_HINT),
        (
            lambda: timesteps[n - kept + 1 :],
            "off by one: keep exactly round(strength * n) timesteps (the first kept one is where the image is noised to).",
        ),
        (
            lambda: timesteps[max(n - kept - 1, 0) :],
            "off by one: keep exactly round(strength * n) timesteps (the first kept one is where the image is noised to).",
        ),
        (
            lambda: timesteps[n - kept : n - kept + 1],
            "return every timestep that runs (the tail of `timesteps`), not only the first one.",
        ),
    ]


CASES = [  # (what, n, strength)
    ("a typical strength", 25, 0.6),
    ("round and int differ: 0.33 * 20 = 6.6", 20, 0.33),
    ("strength 0: nothing runs", 25, 0.0),
    ("strength 1: every step runs", 10, 1.0),
    ("a strong edit", 40, 0.83),
    ("a light edit", 7, 0.2),
]


@register(
    ITEM,
    "sdedit_timesteps(timesteps, strength): the timesteps SDEdit runs, equal to `sdedu.pipeline.last_timesteps`",
    "05_inference",
)
def check_sdedit_timesteps(sdedit_timesteps, trial: Trial) -> str:
    count = 0
    schedule = NoiseSchedule.scaled_linear(1000)
    for k, (what, n, strength) in enumerate(CASES, start=1):
        sampler = DDIMSampler(schedule)
        sampler.set_timesteps(n)
        case = f"{k} ({what}: n = {n}, strength = {strength})"
        with trial.case(case):
            args = [("timesteps", sampler.timesteps.clone()), ("strength", strength)]
            got = trial.call(ITEM, sdedit_timesteps, args, case=case, name="sdedit_timesteps")
            expect_tensor(
                ITEM,
                case,
                got,
                last_timesteps(sampler, n, strength),
                name="the timesteps to run",
                mistakes=sdedit_mistakes(sampler.timesteps, strength),
                shape_hint="return the tail of `timesteps` that runs: round(strength * n) of them (a 1-D tensor, "
                "empty when none runs).",
                default_hint="keep the last round(strength * n) entries of `timesteps`.",
            )
            count += 1
    return f"{count} cases"
