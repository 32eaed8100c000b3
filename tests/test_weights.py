"""sdedu.weights: safetensors + sha256 manifest; loading verifies, nothing is unpickled."""

import json

import pytest
import torch

from sdedu.models.text_encoder import TextEncoder, TextEncoderConfig
from sdedu.models.unet import UNet, UNetConfig
from sdedu.models.vae import VAE, VAEConfig
from sdedu.weights import (
    MANIFEST,
    SHIPPED,
    WeightsError,
    load_component,
    load_pretrained,
    read_manifest,
    save_component,
    sha256_file,
    update_manifest,
)


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    vae = VAE(VAEConfig(channels=(8, 8, 8), norm_groups=4))
    vae.scale_factor.fill_(0.5)
    save_component(vae, "vae", tmp_path, {"training": {"psnr_db": 30.0}})
    save_component(TextEncoder(TextEncoderConfig(width=16, num_heads=2)), "text_encoder", tmp_path)
    save_component(UNet(UNetConfig(channels=(16, 16), context_dim=16, head_dim=8, norm_groups=4)), "unet", tmp_path)
    update_manifest(tmp_path, seed=7, schedule={"kind": "scaled_linear"})
    return tmp_path


def test_save_records_hash_config_and_metadata(folder):
    entry = read_manifest(folder)["components"]["vae"]
    assert entry["sha256"] == sha256_file(folder / "vae.safetensors")
    assert entry["config"]["channels"] == [8, 8, 8] and entry["training"]["psnr_db"] == 30.0
    assert entry["class"] == "sdedu.models.vae.VAE" and entry["parameters"] > 0


def test_round_trip_gives_identical_modules(folder):
    vae = load_component("vae", folder)
    assert float(vae.scale_factor) == 0.5 and not vae.training
    bundle = load_pretrained(folder)
    assert bundle.schedule.T == 1000 and not hasattr(bundle, "get")  # attributes only, not a dict
    assert bundle.manifest["seed"] == 7
    ids = bundle.tokenizer(["a red circle"])
    assert bundle.text_encoder(ids).shape == (1, 12, 16)


def test_hash_mismatch_names_file_and_hashes(folder):
    expected = read_manifest(folder)["components"]["unet"]["sha256"]
    path = folder / "unet.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError) as info:
        load_pretrained(folder)
    message = str(info.value)
    assert "unet.safetensors" in message and expected in message and sha256_file(path) in message


def test_missing_pieces_are_clear_errors(folder, tmp_path_factory):
    with pytest.raises(WeightsError, match="no manifest.json"):
        load_pretrained(tmp_path_factory.mktemp("empty"))
    with pytest.raises(WeightsError, match="no component 'clip'"):
        load_component("clip", folder)
    (folder / "vae.safetensors").unlink()
    with pytest.raises(WeightsError, match="missing"):
        load_component("vae", folder)


def test_manifest_cannot_name_arbitrary_classes(folder):
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["components"]["vae"]["class"] = "os.system"
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="expected one of"):
        load_component("vae", folder)


def test_save_component_rejects_plain_modules(tmp_path):
    with pytest.raises(TypeError, match="dataclass `config`"):
        save_component(torch.nn.Linear(2, 2), "linear", tmp_path)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        save_component("unet", "unet", tmp_path)


def test_shipped_files_are_safetensors_matching_the_manifest():
    from safetensors import safe_open

    manifest = read_manifest(SHIPPED)
    assert manifest, f"{SHIPPED / MANIFEST} is missing"
    total = 0
    for name, entry in manifest["components"].items():
        path = SHIPPED / entry["file"]
        assert sha256_file(path) == entry["sha256"], name
        with safe_open(str(path), framework="pt") as f:  # parses a header, never unpickles
            assert len(list(f.keys())) > 0
        total += path.stat().st_size
    assert total <= 15 * 2**20
    assert {"recipe", "seed", "training_seconds", "metrics", "schedule"} <= set(manifest)
