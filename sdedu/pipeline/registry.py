"""The samplers a pipeline can use, by name: one line each.

    SAMPLER_FACTORIES = {"ddim": DDIMSampler, ...}     name -> factory(schedule) (+ eta where used)

A new sampler (a file in sdedu/samplers/ with `set_timesteps` / `.timesteps` / `step`) is added
here with one line; names that take DDIM's eta are listed in TAKES_ETA.
"""

from __future__ import annotations

from sdedu._checks import check_number_range, describe
from sdedu.samplers import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverMultistepSampler,
    EulerAncestralSampler,
    EulerSampler,
    HeunSampler,
)
from sdedu.schedules import NoiseSchedule

SAMPLER_FACTORIES = {
    "ddim": DDIMSampler,
    "ddpm": DDPMSampler,
    "euler": EulerSampler,
    "euler_a": EulerAncestralSampler,
    "heun": HeunSampler,
    "dpmpp_2m": DPMSolverMultistepSampler,
}
#: The samplers whose factory takes `eta` (DDIM's noise weight, in [0, 1]); the others refuse eta != 0.
TAKES_ETA = ("ddim",)
SAMPLERS = tuple(SAMPLER_FACTORIES)


def check_sampler_name(sampler) -> str:
    """The name if it is registered; otherwise a ValueError listing the valid ones."""
    if not isinstance(sampler, str) or sampler not in SAMPLER_FACTORIES:
        raise ValueError(f"sampler must be one of {tuple(SAMPLER_FACTORIES)}; got {describe(sampler)}")
    return sampler


def make_sampler(name: str, schedule: NoiseSchedule, eta: float = 0.0):
    """A fresh sampler `name` for `schedule`; eta only for the samplers in TAKES_ETA (else it must be 0)."""
    check_sampler_name(name)
    eta = check_number_range("eta", eta, 0.0, 1.0)
    if name in TAKES_ETA:
        return SAMPLER_FACTORIES[name](schedule, eta=eta)
    if eta != 0.0:
        raise ValueError(
            f"eta is used only by the samplers {TAKES_ETA} (sampler={name!r} has no eta); got eta={eta:g}, expected 0"
        )
    return SAMPLER_FACTORIES[name](schedule)
