"""The weights manifest: reading and writing `manifest.json`, and checking every field it holds.

A weights folder holds one safetensors file per component and `manifest.json` (see `sdedu.weights`).
Nothing in the manifest is trusted: each field is checked for presence and type, a component's file
must be a bare name inside the folder, and the schedule, tokenizer and configs are cross-checked
against each other. Every failure is a `WeightsError` naming the field.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from sdedu import __version__
from sdedu._checks import describe
from sdedu.schedules import ScheduleConfig

SHIPPED = Path(__file__).with_name("weights")
MANIFEST = "manifest.json"
BARE_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a component's name: no folders, no ".."
# The manifest layout this library writes and reads. Raise it when a field changes meaning; a manifest
# written before the "format" field existed is format 1.
FORMAT = 1


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
    """The manifest of `directory` (default: the shipped weights); {} when there is none.

    Raises WeightsError when the file is not a JSON object (the error names the file and the place).
    """
    path = Path(directory or SHIPPED) / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict):
        raise WeightsError(f"{path} must hold a JSON object; got {describe(manifest)}")
    return manifest


def update_manifest(directory, **fields) -> dict:
    """Merge top-level fields (recipe, seed, metrics, ...) into the manifest; returns it.

    The manifest also records its format (FORMAT) and the sdedu version that wrote it.
    The new manifest is written beside the old one and swapped in, so a crash never leaves half a file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(directory)
    manifest.update(fields)
    manifest.update(format=FORMAT, sdedu_version=__version__)  # who wrote it, in which layout
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, directory / MANIFEST)
    return manifest


# ---- reading: every field checked, every failure a WeightsError naming it ----------------------

ENTRY_FIELDS = {"file": str, "sha256": str, "class": str, "config": dict}  # required in every component


def fail_field(directory: Path, field_name: str, problem: str):
    raise WeightsError(f"{directory / MANIFEST}: field {field_name!r} {problem}")


def check_format(manifest: dict, directory: Path) -> int:
    """The manifest's format, which must be the one this library reads; a WeightsError that says what to do."""
    found = manifest.get("format", 1)
    if isinstance(found, bool) or not isinstance(found, int) or found < 1:
        fail_field(directory, "format", f"must be an int >= 1; got {describe(found)}")
    if found != FORMAT:
        writer = f"sdedu {manifest.get('sdedu_version', '(version not recorded)')}"
        if found > FORMAT:
            fix = f"it was written by {writer}, newer than this one: upgrade sdedu (pip install -U sdedu)"
        else:
            fix = f"it was written by {writer}, older than this one: load it with that version, or train it again"
        fail_field(directory, "format", f"is {found} but this sdedu {__version__} reads format {FORMAT}: {fix}")
    return found


def check_entry(name: str, entry, directory: Path) -> dict:
    """A component's manifest entry, its required fields and types checked; its file a bare name."""
    where = f"components.{name}"
    if not isinstance(entry, dict):
        fail_field(directory, where, f"must be an object; got {describe(entry)}")
    for key, kind in ENTRY_FIELDS.items():
        if key not in entry:
            fail_field(directory, f"{where}.{key}", "is missing")
        if not isinstance(entry[key], kind):
            fail_field(directory, f"{where}.{key}", f"must be a {kind.__name__}; got {describe(entry[key])}")
    file = entry["file"]
    if not (file.endswith(".safetensors") and BARE_NAME.fullmatch(file.removesuffix(".safetensors"))):
        fail_field(directory, f"{where}.file", f"must be a bare <name>.safetensors in the weights folder; got {file!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
        fail_field(directory, f"{where}.sha256", f"must be 64 lowercase hex digits; got {entry['sha256']!r}")
    return entry


def manifest_components(manifest: dict, directory: Path) -> dict:
    components = manifest.get("components", {})
    if not isinstance(components, dict):
        fail_field(directory, "components", f"must be an object; got {describe(components)}")
    return components


def schedule_config(settings, directory: Path | None = None) -> ScheduleConfig:
    if isinstance(settings, ScheduleConfig):
        return settings
    try:
        return ScheduleConfig.from_dict(settings)
    except (TypeError, ValueError) as error:
        raise WeightsError(f"{directory / MANIFEST if directory else 'manifest'}: field 'schedule': {error}") from None


def tokenizer_from_settings(settings, directory: Path):
    from sdedu.models.text_encoder import Tokenizer

    if not isinstance(settings, dict) or set(settings) - {"max_length"}:
        fail_field(directory, "tokenizer", f'must be {{"max_length": <int>}}; got {describe(settings)}')
    if "max_length" in settings:
        value = settings["max_length"]
        if isinstance(value, bool) or not isinstance(value, int) or not 3 <= value <= 1024:
            fail_field(directory, "tokenizer.max_length", f"must be an int in [3, 1024]; got {describe(value)}")
    return Tokenizer(**settings)


def cross_check(directory: Path, schedule: ScheduleConfig, tokenizer, configs: dict) -> None:
    """Settings that must agree across components: each failure names both fields and values."""
    text, vae, unet = configs["text_encoder"], configs["vae"], configs["unet"]
    for field_name, value, other_name, other in [
        ("schedule.T", schedule.T, "components.unet.config.num_train_timesteps", unet["num_train_timesteps"]),
        ("tokenizer.max_length", tokenizer.max_length, "components.text_encoder.config.max_length", text["max_length"]),
        ("components.text_encoder.config.vocab_size", text["vocab_size"], "the tokenizer's vocabulary", len(tokenizer)),
        (
            "components.unet.config.context_dim",
            unet["context_dim"],
            "components.text_encoder.config.width",
            text["width"],
        ),
        (
            "components.unet.config.in_channels",
            unet["in_channels"],
            "components.vae.config.latent_channels",
            vae["latent_channels"],
        ),
    ]:
        if value != other:
            fail_field(directory, field_name, f"is {value} but {other_name} is {other}: they must agree")
