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


# ---- the manifest is checked, not trusted (issue 13.4) -----------------------------------------


def _edit(folder, change):
    manifest = json.loads((folder / MANIFEST).read_text())
    change(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))


def _set(*path_and_value):
    *path, value = path_and_value

    def change(manifest):
        node = manifest
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def _drop(*path):
    def change(manifest):
        node = manifest
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return change


BAD_MANIFESTS = {
    "schedule T = 50": (_set("schedule", {"kind": "scaled_linear", "T": 50}), "'schedule.T' is 50"),
    "file outside the folder": (_set("components", "vae", "file", "../vae.safetensors"), "'components.vae.file'"),
    "file in a subfolder": (_set("components", "unet", "file", "sub/unet.safetensors"), "'components.unet.file'"),
    "absolute file": (_set("components", "unet", "file", "/etc/passwd"), "'components.unet.file'"),
    "missing sha256": (_drop("components", "unet", "sha256"), "'components.unet.sha256' is missing"),
    "sha256 not a string": (_set("components", "vae", "sha256", 5), "'components.vae.sha256' must be a str"),
    "sha256 not hex": (_set("components", "vae", "sha256", "z" * 64), "'components.vae.sha256' must be 64"),
    "config not an object": (_set("components", "unet", "config", [1, 2]), "'components.unet.config' must be a dict"),
    "unknown config key": (_set("components", "unet", "config", "size", 3), "'components.unet.config' does not build"),
    "missing component": (_drop("components", "text_encoder"), "'components.text_encoder' is missing"),
    "components not an object": (_set("components", []), "'components' must be an object"),
    "missing schedule": (_drop("schedule"), "'schedule' is missing"),
    "unknown schedule kind": (_set("schedule", {"kind": "sigmoid"}), "'schedule': kind must be one of"),
    "schedule not an object": (_set("schedule", "scaled_linear"), "'schedule': schedule settings must be a dict"),
    "tokenizer length": (_set("tokenizer", {"max_length": 20}), "'tokenizer.max_length' is 20"),
    "tokenizer not an int": (_set("tokenizer", {"max_length": "12"}), "'tokenizer.max_length' must be an int"),
    "tokenizer unknown key": (_set("tokenizer", {"lowercase": True}), "'tokenizer' must be"),
    "config vs tensors": (
        _set("components", "unet", "config", "channels", [16, 32]),
        "'components.unet.config' does not fit the tensors in unet.safetensors",
    ),
    "context width": (_set("components", "unet", "config", "context_dim", 32), "'components.unet.config.context_dim'"),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_bad_manifest_is_a_weights_error_naming_the_field(folder, case):
    change, expected = BAD_MANIFESTS[case]
    _edit(folder, change)
    with pytest.raises(WeightsError) as info:
        load_pretrained(folder)
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("text, expected", [("{not json", "not valid JSON"), ("[1, 2]", "must hold a JSON object")])
def test_manifest_that_is_not_a_json_object_is_a_weights_error(folder, text, expected):
    (folder / MANIFEST).write_text(text)
    with pytest.raises(WeightsError, match=expected):
        load_pretrained(folder)
    with pytest.raises(WeightsError, match=expected):
        load_component("vae", folder)


def test_non_finite_tensors_and_bad_scale_factor_are_refused(tmp_path):
    vae = VAE(VAEConfig(channels=(8, 8, 8), norm_groups=4))
    with torch.no_grad():
        vae.decoder.conv_out.weight[0, 0, 0, 0] = float("nan")
    save_component(vae, "vae", tmp_path)
    with pytest.raises(WeightsError, match="inf or NaN.*decoder.conv_out.weight"):
        load_component("vae", tmp_path)


def test_save_component_names_must_be_bare(tmp_path):
    with pytest.raises(ValueError, match="name must be a bare component name"):
        save_component(VAE(VAEConfig(channels=(8, 8, 8), norm_groups=4)), "../vae", tmp_path)


def test_the_shipped_manifest_passes_every_check():
    bundle = load_pretrained()
    assert bundle.schedule.T == bundle.unet.config.num_train_timesteps == 1000
    assert bundle.tokenizer.max_length == bundle.text_encoder.config.max_length


def test_manifest_records_its_format_and_the_version_that_wrote_it(folder):
    from sdedu import __version__
    from sdedu.manifest import FORMAT

    manifest = read_manifest(folder)
    assert manifest["format"] == FORMAT and manifest["sdedu_version"] == __version__
    assert read_manifest(SHIPPED)["format"] == FORMAT


@pytest.mark.parametrize(
    "found, reads, fix",
    [(2, 1, "newer than this one: upgrade sdedu"), (1, 2, "older than this one"), ("1", 1, "must be an int")],
)
def test_a_manifest_of_another_format_is_refused_at_load(folder, monkeypatch, found, reads, fix):
    monkeypatch.setattr("sdedu.manifest.FORMAT", reads)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["format"] = found
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match=fix):
        load_pretrained(folder)
    with pytest.raises(WeightsError, match="field 'format'"):
        load_component("vae", folder)
