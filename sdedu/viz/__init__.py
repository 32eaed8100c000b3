"""Figures for the notebooks: image grids, noise over t, histograms, 2-D trajectories, animations.

Every function draws with matplotlib and returns the `Figure` (or, for animations, an
`IPython.display.HTML`), so a notebook cell can show it, save it or test it. Nothing here
computes diffusion maths: callers pass tensors that the library already produced.

    images     to_numpy_images, image_grid, images_over_t: (B, C, H, W) in [0, 1] by default;
               `value_range=(-1, 1)` for the diffusion maths' range (x_0 scaled, x_t)
    noise      histogram, histograms_over_t (values against N(0, 1)), plot_schedules
    points     scatter_points, trajectory_grid, sample_paths: (N, 2) clouds and their paths
    animation  animate_points, animate_images (offline JavaScript HTML, static fallback)
    diagrams   unet_diagram (from a UNetConfig), guidance_vectors, ring_allreduce_diagram: drawn from
               the real objects they show

Everything is importable from here: `from sdedu import viz; viz.image_grid(images)`.
"""

from sdedu.viz.animation import animate_images, animate_points
from sdedu.viz.diagrams import guidance_vectors, ring_allreduce_diagram, unet_diagram
from sdedu.viz.images import image_grid, images_over_t, to_numpy_images
from sdedu.viz.noise import histogram, histograms_over_t, plot_schedules
from sdedu.viz.points import sample_paths, scatter_points, trajectory_grid

__all__ = [
    "to_numpy_images",
    "image_grid",
    "images_over_t",
    "histogram",
    "histograms_over_t",
    "plot_schedules",
    "scatter_points",
    "trajectory_grid",
    "sample_paths",
    "animate_points",
    "animate_images",
    "unet_diagram",
    "guidance_vectors",
    "ring_allreduce_diagram",
]
