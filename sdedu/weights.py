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

import hashlib
import json
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sdedu._checks import describe
from sdedu.schedules import NoiseSchedule, ScheduleConfig

SHIPPED = Path(__file__).with_name("weights")
MANIFEST = "manifest.json"


class WeightsError(ValueError):
    """A weights file is missing, does not match the manifest, or does not fit its module."""


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory=None) -> dict:
    """The manifest of `directory` (default: the shipped weights); {} when there is none."""
    path = Path(directory or SHIPPED) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def update_manifest(directory, **fields) -> dict:
    """Merge top-level fields (recipe, seed, metrics, ...) into the manifest; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(directory)
    manifest.update(fields)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


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


def _build(name: str, entry: dict) -> torch.nn.Module:
    """An untrained module of the class and config the manifest names (a closed list: no imports by string)."""
    from sdedu.models.text_encoder import TextEncoder, TextEncoderConfig
    from sdedu.models.unet import UNet, UNetConfig
    from sdedu.models.vae import VAE, VAEConfig

    classes = {
        "sdedu.models.vae.VAE": (VAE, VAEConfig),
        "sdedu.models.text_encoder.TextEncoder": (TextEncoder, TextEncoderConfig),
        "sdedu.models.unet.UNet": (UNet, UNetConfig),
    }
    if entry.get("class") not in classes:
        raise WeightsError(
            f"manifest entry {name!r} names class {entry.get('class')!r}; expected one of {sorted(classes)}"
        )
    cls, config_cls = classes[entry["class"]]
    return cls(config_cls(**entry["config"]))


def load_component(name: str, directory=None, device="cpu") -> torch.nn.Module:
    """Build component `name` from the manifest, verify its file's sha256, load its tensors.

    Raises:
        WeightsError: no manifest entry, a missing file, a hash mismatch (naming the file, the
            expected and the actual hash) or tensors that do not fit the module.
    """
    directory = Path(directory or SHIPPED)
    manifest = read_manifest(directory)
    entry = manifest.get("components", {}).get(name)
    if entry is None:
        raise WeightsError(
            f"{directory / MANIFEST} has no component {name!r}; it lists {sorted(manifest.get('components', {}))}"
        )
    path = directory / entry["file"]
    if not path.is_file():
        raise WeightsError(f"weights file {path} is missing (listed in {directory / MANIFEST})")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise WeightsError(
            f"weights file {path} does not match the manifest: expected sha256 {entry['sha256']}, "
            f"got {actual}. The file is corrupt or was replaced; retrain or restore it."
        )
    module = _build(name, entry)
    try:
        module.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    except RuntimeError as error:
        raise WeightsError(
            f"weights file {path} does not fit {entry['class']} with config {entry['config']}: {error}"
        ) from None
    return module.to(device).eval()


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
    if isinstance(settings, ScheduleConfig):
        return settings.build()
    try:
        return ScheduleConfig.from_dict(settings).build()
    except (TypeError, ValueError) as error:
        raise WeightsError(f"manifest field 'schedule': {error}") from None


def load_pretrained(path=None, device="cpu") -> Pretrained:
    """Load a trained tiny Stable Diffusion, verifying every file against the manifest.

    Args:
        path: a weights folder (with manifest.json); None loads the weights shipped with sdedu.
        device: where the networks go.
    Returns:
        `Pretrained` with tokenizer, text_encoder, vae, unet (eval mode), schedule, manifest.
    """
    from sdedu.models.text_encoder import Tokenizer

    directory = Path(path) if path is not None else SHIPPED
    if not (directory / MANIFEST).is_file():
        raise WeightsError(
            f"no {MANIFEST} in {directory}: expected a folder written by `python -m sdedu.train all`"
            + (" (the shipped weights are missing: reinstall sdedu)" if path is None else "")
        )
    manifest = read_manifest(directory)
    tokenizer_settings = manifest.get("tokenizer", {})
    tokenizer = Tokenizer(**tokenizer_settings) if tokenizer_settings else Tokenizer()
    return Pretrained(
        tokenizer=tokenizer,
        text_encoder=load_component("text_encoder", directory, device),
        vae=load_component("vae", directory, device),
        unet=load_component("unet", directory, device),
        schedule=schedule_from_settings(manifest.get("schedule", {})),
        manifest=manifest,
    )
