"""Shipped weights: safetensors files checked against a sha256 manifest. Nothing is unpickled.

`sdedu/weights/` holds one safetensors file per component (text_encoder, vae, unet) and
`manifest.json`, which records for each file its sha256 and size, the class and config that
rebuild the module, and for the whole model the recipe and seed that trained it, how long
each part took and the metrics measured on it, plus the tokenizer and noise-schedule settings.

Why not `torch.load`? A PyTorch .pt/.ckpt file is a pickle, and unpickling can execute
arbitrary code. safetensors stores only named tensors; the sha256 check then makes sure the
bytes are exactly the ones the manifest describes (a truncated or swapped file fails loudly).

    save_component(module, "unet", directory, metadata)   # writes unet.safetensors + manifest entry
    bundle = load_pretrained()                            # the shipped model, verified
    bundle.unet, bundle.vae, bundle.text_encoder, bundle.tokenizer, bundle.schedule
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sdedu._checks import check_device, describe
from sdedu.manifest import (
    BARE_NAME,
    MANIFEST,
    SHIPPED,
    WeightsError,
    check_entry,
    check_format,
    cross_check,
    fail_field,
    manifest_components,
    read_manifest,
    schedule_config,
    sha256_file,
    tokenizer_from_settings,
    update_manifest,
)
from sdedu.schedules import NoiseSchedule

# Re-exported: the manifest's names are part of this module's public face.
__all__ = [
    "MANIFEST",
    "SHIPPED",
    "Pretrained",
    "WeightsError",
    "load_component",
    "load_pretrained",
    "read_manifest",
    "save_component",
    "schedule_from_settings",
    "sha256_file",
    "update_manifest",
]


def save_component(module: torch.nn.Module, name: str, directory, metadata: dict | None = None) -> dict:
    """Save `module`'s state (parameters and buffers) as `<name>.safetensors` and record it.

    Args:
        module: a model whose `config` attribute is a dataclass (VAE, TextEncoder, UNet).
        name: the component's name, e.g. "unet".
        directory: the weights folder (created if needed).
        metadata: extra JSON-able facts for the manifest entry (training seconds, metrics, ...).
    Returns:
        the manifest entry: file, sha256, bytes, class, config, parameters and the metadata.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module; got {describe(module)}")
    if not is_dataclass(getattr(module, "config", None)):
        raise TypeError(f"module must have a dataclass `config` (VAE, TextEncoder, UNet); got {type(module).__name__}")
    if not isinstance(name, str) or not BARE_NAME.fullmatch(name):
        raise ValueError(f"name must be a bare component name of letters, digits, '_' or '-'; got {describe(name)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.safetensors"
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    # One metadata key: safetensors writes a metadata dict in no fixed order, and the same
    # tensors must give the same bytes (and sha256) every time.
    save_file(tensors, str(path), metadata={"component": f"{name} ({type(module).__name__})"})
    entry = {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "class": f"{type(module).__module__}.{type(module).__name__}",
        "config": asdict(module.config),
        "parameters": sum(p.numel() for p in module.parameters()),
        **(metadata or {}),
    }
    manifest = read_manifest(directory)
    manifest.setdefault("components", {})[name] = entry
    update_manifest(directory, components=manifest["components"])
    return entry


def _build(name: str, entry: dict, directory: Path) -> torch.nn.Module:
    """An untrained module of the class and config the manifest names (a closed list: no imports by string)."""
    from sdedu.models.controlnet import ControlNetConfig, ControlNetModel
    from sdedu.models.mmdit import MMDiT, MMDiTConfig
    from sdedu.models.text_encoder import ImageEncoder, ImageEncoderConfig, TextEncoder, TextEncoderConfig
    from sdedu.models.unet import UNet, UNetConfig
    from sdedu.models.vae import VAE, VAEConfig

    classes = {
        "sdedu.models.vae.VAE": (VAE, VAEConfig),
        "sdedu.models.text_encoder.TextEncoder": (TextEncoder, TextEncoderConfig),
        "sdedu.models.unet.UNet": (UNet, UNetConfig),
        "sdedu.models.mmdit.MMDiT": (MMDiT, MMDiTConfig),
        "sdedu.models.text_encoder.ImageEncoder": (ImageEncoder, ImageEncoderConfig),
        "sdedu.models.controlnet.ControlNetModel": (ControlNetModel, ControlNetConfig),
    }
    if entry["class"] not in classes:
        fail_field(
            directory, f"components.{name}.class", f"names {entry['class']!r}; expected one of {sorted(classes)}"
        )
    cls, config_cls = classes[entry["class"]]
    try:
        return cls(config_cls(**entry["config"]))
    except (TypeError, ValueError) as error:
        fail_field(directory, f"components.{name}.config", f"does not build {cls.__name__}: {error}")


def _load_tensors(name: str, module: torch.nn.Module, entry: dict, directory: Path, device) -> torch.nn.Module:
    """Verify the file's sha256, load its tensors into `module` (strict), refuse non-finite ones."""
    path = directory / entry["file"]
    if not path.is_file():
        raise WeightsError(f"weights file {path} is missing (listed in {directory / MANIFEST})")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise WeightsError(
            f"weights file {path} does not match the manifest: expected sha256 {entry['sha256']}, "
            f"got {actual}. The file is corrupt or was replaced; retrain or restore it."
        )
    try:
        tensors = load_file(str(path), device="cpu")
        module.load_state_dict(tensors, strict=True)
    except (SafetensorError, RuntimeError) as error:  # an unreadable file, or tensors that do not fit
        message = str(error).replace("\n", " ")
        fail_field(directory, f"components.{name}.config", f"does not fit the tensors in {path.name}: {message}")
    bad = [key for key, value in tensors.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise WeightsError(f"weights file {path} holds inf or NaN in {bad[:3]}")
    return module.to(device).eval()


def load_component(name: str, directory=None, device="cpu") -> torch.nn.Module:
    """Build component `name` from the manifest, verify its file's sha256, load its tensors.

    Raises:
        WeightsError: no manifest entry, a missing or ill-typed field, a file name that is not
            bare, a missing file, a hash mismatch (naming the file, the expected and the actual
            hash) or tensors that do not fit the module.
    """
    device = check_device("device", device)
    directory = Path(directory or SHIPPED)
    manifest = read_manifest(directory)
    check_format(manifest, directory)
    components = manifest_components(manifest, directory)
    if name not in components:
        raise WeightsError(f"{directory / MANIFEST} has no component {name!r}; it lists {sorted(components)}")
    entry = check_entry(name, components[name], directory)
    return _load_tensors(name, _build(name, entry, directory), entry, directory, device)


@dataclass
class Pretrained:
    """Everything needed to sample: the three networks, the tokenizer and the noise schedule."""

    tokenizer: object
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    schedule: object
    manifest: dict = field(default_factory=dict)


def schedule_from_settings(settings) -> NoiseSchedule:
    """The NoiseSchedule a manifest's "schedule" entry (a dict) or a `ScheduleConfig` describes."""
    return schedule_config(settings).build()


def load_pretrained(path=None, device="cpu") -> Pretrained:
    """Load a trained tiny Stable Diffusion, verifying the manifest and every file against it.

    The manifest's fields are checked for presence and type, the schedule, tokenizer and configs
    against each other (e.g. schedule.T against the UNet's num_train_timesteps) and the configs
    against the tensors (strict loading); every failure is a WeightsError naming the field.

    Args:
        path: a weights folder (with manifest.json); None loads the weights shipped with sdedu.
        device: where the networks go.
    Returns:
        `Pretrained` with tokenizer, text_encoder, vae, unet (eval mode), schedule, manifest.
    """
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a folder (str or Path) or None; got {describe(path)}")
    device = check_device("device", device)
    directory = Path(path) if path is not None else SHIPPED
    if not (directory / MANIFEST).is_file():
        raise WeightsError(
            f"no {MANIFEST} in {directory}: expected a folder written by `python -m sdedu.train all`"
            + (" (the shipped weights are missing: reinstall sdedu)" if path is None else "")
        )
    manifest = read_manifest(directory)
    check_format(manifest, directory)
    components = manifest_components(manifest, directory)
    for name in ("text_encoder", "vae", "unet"):
        if name not in components:
            fail_field(directory, f"components.{name}", "is missing")
        check_entry(name, components[name], directory)
    if "schedule" not in manifest:
        fail_field(directory, "schedule", 'is missing (e.g. {"kind": "scaled_linear", "T": 1000})')
    schedule = schedule_config(manifest["schedule"], directory)
    tokenizer = tokenizer_from_settings(manifest.get("tokenizer", {}), directory)
    modules = {name: _build(name, components[name], directory) for name in ("text_encoder", "vae", "unet")}
    cross_check(directory, schedule, tokenizer, {name: asdict(m.config) for name, m in modules.items()})
    for name, module in modules.items():
        _load_tensors(name, module, components[name], directory, device)
    scale = float(modules["vae"].scale_factor)
    if not (math.isfinite(scale) and scale > 0):
        raise WeightsError(
            f"weights file {directory / components['vae']['file']}: the VAE's scale_factor is {scale}; expected > 0"
        )
    return Pretrained(tokenizer=tokenizer, schedule=schedule.build(), manifest=manifest, **modules)
