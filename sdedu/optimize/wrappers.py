"""What the optimisations share: wrapping a network, unwrapping it, measuring it, copying a pipeline."""

from __future__ import annotations

import copy

from torch import nn

from sdedu._checks import describe

COMPONENTS = ("unet", "text_encoder", "vae")


class ModuleWrapper(nn.Module):
    """A module around another one that still answers to the inner module's attributes.

    `wrapper.config`, `wrapper.set_store_attention(...)` and the like reach the wrapped UNet, so
    the pipeline and the notebooks need not know that it is wrapped.
    """

    # A compiled module (sdedu.optimize.compiling) sets this False: copying it would copy the
    # compiled graph's guards, not the weights the copy is meant to change.
    copyable: bool = True

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("module")
            if inner is None:
                raise
            return getattr(inner, name)


def unwrap(module: nn.Module) -> nn.Module:
    """The innermost module under any number of sdedu.optimize wrappers."""
    while isinstance(module, ModuleWrapper):
        module = module.module
    return module


def model_size_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (each tensor counted once)."""
    seen, total = set(), 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def copy_pipeline(pipe, components=COMPONENTS):
    """A shallow copy of the pipeline whose named networks are deep copies."""
    for name in components:
        if not getattr(getattr(pipe, name), "copyable", True):
            raise ValueError(f"pipe.{name} is already compiled: apply sdedu.optimize.compile last")
    new = copy.copy(pipe)
    for name in components:
        setattr(new, name, copy.deepcopy(getattr(pipe, name)))
    return new


def check_pipe(pipe):
    missing = [name for name in ("unet", "text_encoder", "vae", "device") if not hasattr(pipe, name)]
    if missing:
        raise TypeError(
            f"pipe must be a TinyStableDiffusion (with unet, text_encoder, vae, device); got {describe(pipe)}"
        )
    return pipe


def check_components(components) -> tuple:
    if isinstance(components, str):
        components = (components,)
    components = tuple(components)
    unknown = [c for c in components if c not in COMPONENTS]
    if not components or unknown:
        raise ValueError(f"components must be a non-empty subset of {COMPONENTS}; got {components!r}")
    return components
