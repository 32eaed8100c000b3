"""sdedu: learn Stable Diffusion by building a tiny, real one.

The most used names are importable from the top level; each is loaded on first use so that
`import sdedu` stays fast and the core maths never pulls in the models:

    from sdedu import NoiseSchedule, q_sample, DDIMSampler, TinyStableDiffusion
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "NoiseSchedule": "sdedu.schedules",
    "q_sample": "sdedu.diffusion",
    "q_posterior": "sdedu.diffusion",
    "DDPMSampler": "sdedu.samplers",
    "DDIMSampler": "sdedu.samplers",
    "classifier_free_guidance": "sdedu.guidance",
    "TinyStableDiffusion": "sdedu.pipeline",
    "TinyStableDiffusion3": "sdedu.pipeline.sd3",
    "ControlNet": "sdedu.pipeline.controlnet",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sdedu' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
