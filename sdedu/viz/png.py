"""Image grids as PNG files: what `sdedu generate` writes (8 bits a channel, each pixel drawn scale x scale).

`write_png` is the one place the library writes a PNG: with a provenance dict it embeds the generation's
settings and the IPTC "trainedAlgorithmicMedia" label (`sdedu.viz.provenance`).

Imports numpy, torch, PIL and matplotlib only when called, so that importing this module (as
`sdedu --help` does) stays cheap.
"""

from __future__ import annotations


def grid_size(count: int, columns: int | None, scale: int, size: int = 32, pad: int = 2) -> tuple[int, int]:
    """(height, width) in pixels of the grid `save_grid` draws for `count` images."""
    columns = min(columns or 8, count)
    rows = -(-count // columns)
    return (rows * (size + pad) + pad) * scale, (columns * (size + pad) + pad) * scale


def to_uint8(images):
    """Images (B, 3, H, W) in [0, 1] -> uint8 (B, 3, H, W) on the CPU, 0..255."""
    import torch

    return (images.detach().float().clamp(0, 1) * 255).round().to("cpu", dtype=torch.uint8)


def write_png(array, path, provenance: dict | None = None) -> None:
    """Write array (H, W, 3) uint8 as a PNG; with `provenance` (see `generation_provenance`) its metadata too."""
    from PIL import Image

    from sdedu.viz.provenance import png_info

    pnginfo = None if provenance is None else png_info(provenance)
    Image.fromarray(array).save(path, format="PNG", pnginfo=pnginfo)


def save_grid(images, path, columns=None, scale: int = 4, title=None, pad: int = 2, provenance=None) -> None:
    """Save images (B, 3, H, W) as one PNG grid, each pixel drawn scale x scale.

    images: floats in [0, 1] or uint8 (see `to_uint8`); the grid is built in 8 bits, so it takes
    3 bytes per pixel of the PNG and nothing more.
    provenance: what made the images (`sdedu.viz.provenance.generation_provenance`), written into the PNG.
    """
    import numpy as np
    import torch

    if images.dtype != torch.uint8:
        images = to_uint8(images)
    B, C, H, W = images.shape
    columns = min(columns or 8, B)
    rows = -(-B // columns)
    grid = np.full((rows * (H + pad) + pad, columns * (W + pad) + pad, C), 128, dtype=np.uint8)  # grey frame
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):  # (H, W, 3) each
        r, c = divmod(i, columns)
        grid[pad + r * (H + pad) : pad + r * (H + pad) + H, pad + c * (W + pad) : pad + c * (W + pad) + W] = image
    array = grid.repeat(scale, axis=0).repeat(scale, axis=1)  # (H' * scale, W' * scale, 3)
    if title is None:
        write_png(array, path, provenance)
        return
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    height, width = array.shape[:2]
    fig = plt.figure(figsize=(width / 100, height / 100 + 0.4), dpi=100)
    ax = fig.add_axes((0, 0, 1, height / (height + 40)))
    ax.imshow(array, interpolation="nearest")
    ax.axis("off")
    fig.suptitle(title, fontsize=8, y=0.99)
    fig.canvas.draw()
    titled = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # (H'', W'', 3) the rendered figure
    plt.close(fig)
    write_png(titled, path, provenance)
