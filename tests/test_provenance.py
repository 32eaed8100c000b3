"""Provenance metadata (issue 19 item 5): every field written into a PNG reads back, the XMP states the
IPTC digital source type, and `sdedu info` prints it or says clearly why it cannot."""

import xml.etree.ElementTree as ET

import pytest
import torch
from PIL import Image

from sdedu import __version__, cli
from sdedu.viz.png import save_grid
from sdedu.viz.provenance import (
    DIGITAL_SOURCE_TYPE,
    FIELDS,
    IPTC_EXT,
    XMP_KEY,
    generation_provenance,
    read_provenance,
)
from sdedu.weights import read_manifest


@pytest.fixture(scope="module")
def generated(tiny_random_pipe, tmp_path_factory):
    """A grid the tiny random pipeline drew, saved with its provenance, and that provenance."""
    prompt, seed, steps, guidance = "a small blue square in the center", 7, 2, 3.5
    images = tiny_random_pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, seed=seed)
    provenance = generation_provenance(tiny_random_pipe, prompt, seed, "ddim", steps, guidance)
    path = tmp_path_factory.mktemp("provenance") / "grid.png"
    save_grid(images, path, provenance=provenance)
    return path, provenance


def test_every_field_round_trips(generated):
    path, provenance = generated
    assert set(provenance) == set(FIELDS)
    back = read_provenance(path)
    assert back == provenance
    assert back["seed"] == 7 and back["steps"] == 2 and back["guidance_scale"] == 3.5
    assert back["model"] == "TinyStableDiffusion" and back["weights_sha256"] == "unknown"  # built, not loaded
    assert back["sdedu_version"] == __version__ and back["digital_source_type"] == DIGITAL_SOURCE_TYPE


def test_titled_grid_carries_it_too(tiny_random_pipe, generated, tmp_path):
    _, provenance = generated
    path = tmp_path / "titled.png"
    images = tiny_random_pipe("a red shape", num_inference_steps=1, seed=0)
    save_grid(images, path, title="a red shape", provenance=provenance)
    assert read_provenance(path) == provenance


def test_xmp_parses_with_the_iptc_field_and_a1111_parameters(generated):
    path, provenance = generated
    with Image.open(path) as image:
        text = dict(image.text)
    root = ET.fromstring(text[XMP_KEY])  # the whole packet, its <?xpacket?> processing instructions included
    found = [element.text for element in root.iter(f"{{{IPTC_EXT}}}DigitalSourceType")]
    assert found == [DIGITAL_SOURCE_TYPE]
    assert text["Software"] == f"sdedu {__version__}"
    prompt_line, settings = text["parameters"].split("\n")
    assert prompt_line == provenance["prompt"]
    assert settings.startswith("Steps: 2, Sampler: ddim, CFG scale: 3.5, Seed: 7, ")


def test_cli_generate_then_info(tmp_path, capsys):
    path = tmp_path / "grid.png"
    argv = ["generate", "a red circle", "-n", "2", "--seed", "3", "--steps", "2", "--guidance", "1.5"]
    assert cli.main([*argv, "-o", str(path)]) == 0
    unet_sha256 = read_manifest()["components"]["unet"]["sha256"]
    expected = {
        "prompt": "a red circle",
        "seed": 3,
        "sampler": "ddim",
        "steps": 2,
        "guidance_scale": 1.5,
        "eta": 0.0,
        "model": "TinyStableDiffusion",
        "weights_sha256": unet_sha256,
        "sdedu_version": __version__,
        "digital_source_type": DIGITAL_SOURCE_TYPE,
    }
    assert read_provenance(path) == expected
    capsys.readouterr()
    assert cli.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"weights_sha256: {unet_sha256}" in out and "prompt: a red circle" in out and "seed: 3" in out


def test_info_without_metadata_says_so(tmp_path, capsys):
    path = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(path)
    assert read_provenance(path) == {}
    with pytest.raises(SystemExit) as raised:
        cli.main(["info", str(path)])
    assert raised.value.code == 1
    assert "carries no sdedu provenance metadata" in capsys.readouterr().err


@pytest.mark.parametrize("name, content", [("notes.png", b"just text"), ("missing.png", None)])
def test_info_on_a_non_png_names_the_argument(tmp_path, capsys, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as raised:
        cli.main(["info", str(path)])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "argument image: expected a PNG file" in err and name in err
    with pytest.raises((ValueError, FileNotFoundError), match="path: expected a PNG file"):
        read_provenance(path)


def test_a_partial_provenance_is_refused(generated, tmp_path):
    _, provenance = generated
    with pytest.raises(ValueError, match="provenance must be a dict with the keys"):
        save_grid(torch.zeros(1, 3, 2, 2), tmp_path / "x.png", provenance={"prompt": "a"})
    assert not (tmp_path / "x.png").exists()
