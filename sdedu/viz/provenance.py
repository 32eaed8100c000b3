"""Provenance metadata of generated PNGs: what made an image, written into the file and read back.

Every PNG `sdedu.viz.png.write_png` writes with a provenance dict (as `sdedu generate` does) carries:

- one iTXt chunk per field, keyword "sdedu:<field>" (FIELDS: prompt, seed, sampler, steps,
  guidance_scale, eta, model, weights_sha256, sdedu_version, digital_source_type), UTF-8 text;
- a "parameters" tEXt/iTXt chunk in the AUTOMATIC1111 web UI's "PNG Info" layout (the prompt on the first
  line, then "Steps: 25, Sampler: ddim, CFG scale: 2, Seed: 0, Model hash: <10 hex>, Model: ..."), which
  image viewers and SD front ends already show; ComfyUI's own "prompt"/"workflow" keys hold JSON graphs, so
  sdedu's fields are prefixed rather than reusing them;
- "Software" (a PNG-spec keyword, ISO/IEC 15948 section 11.3.4.2): "sdedu <version>";
- an XMP packet in the iTXt chunk "XML:com.adobe.xmp" (XMP Specification Part 3, "PNG") holding
  Iptc4xmpExt:DigitalSourceType = DIGITAL_SOURCE_TYPE: the IPTC Photo Metadata Standard's "Digital Source
  Type" with the NewsCodes value trainedAlgorithmicMedia, "media created algorithmically using a model
  derived from sampled content" -- the label generators and platforms read to tell AI-made images apart.

Text chunks are unsigned: anyone can strip or edit them (C2PA manifests sign the claim; the Tree-Ring
watermark survives in the pixels). `seed` is the first image's: image i of a grid drew its noise from seed + i.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

from sdedu import __version__

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"  # the IPTC Extension schema's XMP namespace
XMP_KEY = "XML:com.adobe.xmp"
PREFIX = "sdedu:"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DENOISERS = ("unet", "mmdit")  # the manifest component whose sha256 identifies the weights, by pipeline
FIELDS = {  # field -> its type when read back
    "prompt": str,
    "seed": int,
    "sampler": str,
    "steps": int,
    "guidance_scale": float,
    "eta": float,
    "model": str,
    "weights_sha256": str,
    "sdedu_version": str,
    "digital_source_type": str,
}


def generation_provenance(pipe, prompt: str, seed: int, sampler: str, steps: int, guidance_scale: float, eta=0.0):
    """The provenance dict (every key of FIELDS) of images `pipe(prompt, ...)` made with these settings.

    model: the manifest's "model" (TinyStableDiffusion3's) or the pipeline's class name; weights_sha256:
    the manifest's sha256 of the denoiser's file (the UNet's, or the MMDiT's), "unknown" for weights that
    came from no manifest (e.g. networks built in a notebook).
    """
    components = pipe.manifest.get("components", {})
    denoiser = next((components[name] for name in DENOISERS if name in components), {})
    return {
        "prompt": str(prompt),
        "seed": int(seed),
        "sampler": str(sampler),
        "steps": int(steps),
        "guidance_scale": float(guidance_scale),
        "eta": float(eta),
        "model": str(pipe.manifest.get("model", type(pipe).__name__)),
        "weights_sha256": str(denoiser.get("sha256", "unknown")),
        "sdedu_version": __version__,
        "digital_source_type": DIGITAL_SOURCE_TYPE,
    }


def _check(provenance: dict) -> None:
    if not isinstance(provenance, dict) or set(provenance) != set(FIELDS):
        given = sorted(provenance) if isinstance(provenance, dict) else type(provenance).__name__
        raise ValueError(
            f"provenance must be a dict with the keys {sorted(FIELDS)} (see generation_provenance); got {given}"
        )


def a1111_parameters(provenance: dict) -> str:
    """The AUTOMATIC1111 "parameters" text: the prompt, then one line of "Name: value" settings."""
    _check(provenance)
    p = provenance
    settings = (
        f"Steps: {p['steps']}, Sampler: {p['sampler']}, CFG scale: {p['guidance_scale']:g}, Seed: {p['seed']}, "
        f"Model hash: {p['weights_sha256'][:10]}, Model: {p['model']}, Version: sdedu {p['sdedu_version']}"
    )
    return f"{p['prompt']}\n{settings}"


def xmp_packet(provenance: dict) -> str:
    """An XMP packet (XMP Specification Part 1, section 7.3) stating the IPTC digital source type."""
    _check(provenance)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        f'  <rdf:Description rdf:about="" xmlns:Iptc4xmpExt="{IPTC_EXT}" xmlns:xmp="http://ns.adobe.com/xap/1.0/">\n'
        f"   <Iptc4xmpExt:DigitalSourceType>{escape(provenance['digital_source_type'])}</Iptc4xmpExt:DigitalSourceType>\n"
        f"   <xmp:CreatorTool>sdedu {escape(provenance['sdedu_version'])}</xmp:CreatorTool>\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="r"?>'
    )


def png_info(provenance: dict):
    """The PIL `PngInfo` holding every chunk listed in the module docstring."""
    from PIL.PngImagePlugin import PngInfo

    _check(provenance)
    info = PngInfo()
    info.add_text("Software", f"sdedu {provenance['sdedu_version']}")
    info.add_itxt("parameters", a1111_parameters(provenance))
    for field in FIELDS:
        info.add_itxt(PREFIX + field, str(provenance[field]))
    info.add_itxt(XMP_KEY, xmp_packet(provenance))
    return info


def check_png(path, argument: str = "path") -> Path:
    """`path` as a Path, after checking it is an existing PNG file (its first 8 bytes are the PNG signature)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{argument}: expected a PNG file; {str(path)!r} does not exist or is not a file")
    with path.open("rb") as f:
        head = f.read(len(PNG_SIGNATURE))
    if head != PNG_SIGNATURE:
        raise ValueError(f"{argument}: expected a PNG file; {str(path)!r} does not start with the PNG signature")
    return path


def read_provenance(path) -> dict:
    """The provenance fields a PNG carries (keys of FIELDS, typed), {} when it carries none.

    Raises FileNotFoundError / ValueError naming `path` when it is no PNG file, and ValueError when a
    field's text does not parse as its type (e.g. a hand-edited seed).
    """
    from PIL import Image

    path = check_png(path)
    with Image.open(path) as image:
        text = dict(image.text)  # tEXt, zTXt and iTXt chunks, decoded
    provenance = {}
    for field, kind in FIELDS.items():
        if PREFIX + field in text:
            value = text[PREFIX + field]
            try:
                provenance[field] = kind(value)
            except ValueError:
                raise ValueError(
                    f"{str(path)!r}: provenance field {PREFIX + field!r} should be {kind.__name__}; got {value!r}"
                ) from None
    return provenance
