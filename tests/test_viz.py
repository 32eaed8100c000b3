"""Figures and widgets: they draw what they are given, reject bad input, and work headless."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from IPython.display import HTML  # noqa: E402

from sdedu import viz, widgets  # noqa: E402
from sdedu.schedules import NoiseSchedule  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_to_numpy_images_maps_the_value_range_to_0_1():
    images = torch.tensor([-1.0, 0.0, 1.0, 3.0]).reshape(1, 1, 2, 2).expand(1, 3, 2, 2)
    array = viz.to_numpy_images(images, value_range=(-1.0, 1.0))
    assert array.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(array[0, :, :, 0].flatten(), [0.0, 0.5, 1.0, 1.0])  # 3.0 is clipped
    # The default range is [0, 1], the range of every image a learner sees; -1 is clipped to black.
    np.testing.assert_allclose(viz.to_numpy_images(images)[0, :, :, 0].flatten(), [0.0, 0.0, 1.0, 1.0])


def test_image_grid_shows_the_pixels_it_was_given():
    images = torch.rand(5, 3, 8, 8)
    fig = viz.image_grid(images, ncols=3, titles=[str(i) for i in range(5)])  # [0, 1] is the default range
    axes = fig.get_axes()
    assert len(axes) == 6  # 2 rows x 3 columns, the last one blank
    shown = axes[4].images[0].get_array()
    np.testing.assert_allclose(np.asarray(shown), images[4].permute(1, 2, 0).numpy(), atol=1e-6)
    assert axes[4].get_title() == "4" and not axes[5].axison


def test_image_grid_handles_grey_images_and_rejects_other_channel_counts():
    assert viz.image_grid(torch.zeros(2, 1, 4, 4)).get_axes()[0].images
    with pytest.raises(ValueError, match="images must have 1 or 3 channels"):
        viz.image_grid(torch.zeros(2, 4, 4, 4))
    with pytest.raises(ValueError, match="titles must have one entry per image"):
        viz.image_grid(torch.zeros(2, 3, 4, 4), titles=["a"])


def test_images_over_t_titles_columns_and_labels_rows():
    rows = [torch.zeros(3, 3, 4, 4), torch.ones(3, 3, 4, 4)]
    fig = viz.images_over_t(rows, [0, 500, 999], row_labels=["linear", "cosine"])
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes[:3]] == ["t = 0", "t = 500", "t = 999"]
    assert axes[3].get_ylabel() == "cosine"
    with pytest.raises(ValueError, match="one image per timestep"):
        viz.images_over_t(torch.zeros(2, 3, 4, 4), [0, 1, 2])


def test_histogram_is_a_density_with_the_normal_overlay():
    ax = viz.histogram(torch.randn(10_000, generator=torch.Generator().manual_seed(0)))
    heights = np.array([patch.get_height() for patch in ax.patches])
    widths = np.array([patch.get_width() for patch in ax.patches])
    assert abs((heights * widths).sum() - 1.0) < 0.01  # almost all mass inside [-4, 4]
    assert len(ax.lines) == 1  # the N(0, 1) density


def test_histograms_over_t_one_panel_per_timestep():
    fig = viz.histograms_over_t([torch.randn(100), torch.randn(100)], [0, 999])
    assert [ax.get_title() for ax in fig.get_axes()] == ["t = 0", "t = 999"]


def test_trajectory_grid_plots_every_frame():
    frames = torch.randn(4, 50, 2)
    fig = viz.trajectory_grid(frames, titles=["a", "b", "c", "d"], ncols=3, reference=torch.zeros(10, 2))
    axes = fig.get_axes()
    assert len(axes) == 6 and not axes[5].axison
    np.testing.assert_allclose(axes[2].collections[1].get_offsets(), frames[2].numpy())
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        viz.scatter_points(torch.zeros(5, 3))


def test_animations_are_offline_html():
    html = viz.animate_points(torch.randn(3, 20, 2), titles=["1", "2", "3"])
    assert isinstance(html, HTML) and "<script" in html.data and "data:image/png" in html.data
    html = viz.animate_images(torch.rand(2, 3, 8, 8))
    assert isinstance(html, HTML)
    assert not plt.get_fignums()  # the animation figure is closed so it is not shown twice


def test_animation_falls_back_to_a_static_grid(monkeypatch, capsys):
    from matplotlib.animation import FuncAnimation

    def broken(self, *args, **kwargs):
        raise RuntimeError("no writer")

    monkeypatch.setattr(FuncAnimation, "to_jshtml", broken)
    result = viz.animate_points(torch.randn(3, 20, 2))
    assert isinstance(result, plt.Figure) and len(result.get_axes()) == 3
    assert "static grid" in capsys.readouterr().out


def test_noise_slider_outside_jupyter_is_a_static_figure():
    assert not widgets.widgets_available()
    schedules = {"linear": NoiseSchedule.linear(T=100), "cosine": NoiseSchedule.cosine(T=100)}
    x0 = torch.zeros(1, 3, 8, 8)
    fig = widgets.noise_slider(x0, schedules, generator=torch.Generator().manual_seed(0))
    axes = fig.get_axes()
    assert len(axes) == 12 and axes[0].get_title() == "t = 0" and axes[6].get_ylabel() == "cosine"
    # t = 99 of the linear schedule is almost pure noise: the shown pixels are spread out.
    assert np.asarray(axes[5].images[0].get_array()).std() > 0.2


def test_sdedu_widgets_0_turns_sliders_off_even_inside_a_kernel(monkeypatch):
    """The book's kernels run with SDEDU_WIDGETS=0 (book/conf.py): static figures, no widget comms for nbclient."""

    class KernelShell:
        kernel = object()

    monkeypatch.setattr("IPython.get_ipython", lambda: KernelShell())
    monkeypatch.delenv("SDEDU_WIDGETS", raising=False)
    assert widgets.widgets_available()
    monkeypatch.setenv("SDEDU_WIDGETS", "0")
    assert not widgets.widgets_available()


def test_noise_slider_rejects_bad_arguments():
    x0 = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="same T"):
        widgets.noise_slider(x0, {"a": NoiseSchedule.linear(T=10), "b": NoiseSchedule.linear(T=20)})
    with pytest.raises(TypeError, match="schedules must be"):
        widgets.noise_slider(x0, "linear")
    with pytest.raises(ValueError, match="x0 must be one image"):
        widgets.noise_slider(torch.zeros(2, 3, 8, 8), NoiseSchedule.linear(T=10))


def test_plot_schedules_draws_alpha_bar_and_log_snr():
    schedules = {"linear": NoiseSchedule.linear(T=50), "cosine": NoiseSchedule.cosine(T=50)}
    fig = viz.plot_schedules(schedules)
    left, right = fig.get_axes()
    assert len(left.lines) == 2 and right.get_yscale() == "log"
    np.testing.assert_allclose(left.lines[1].get_ydata(), schedules["cosine"].alpha_bar.numpy())
    with pytest.raises(TypeError, match="schedules must be"):
        viz.plot_schedules([])


@pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive")
def test_noise_slider_in_jupyter_is_a_slider_over_t(monkeypatch):
    import ipywidgets

    monkeypatch.setattr(widgets, "widgets_available", lambda: True)
    box = widgets.noise_slider(torch.zeros(1, 3, 8, 8), NoiseSchedule.linear(T=100), t_step=5, initial_t=20)
    slider, output = box.children
    assert isinstance(slider, ipywidgets.IntSlider) and isinstance(output, ipywidgets.Output)
    assert (slider.min, slider.max, slider.step, slider.value) == (0, 99, 5, 20)
    slider.value = 95  # redraws without error
    assert not plt.get_fignums()  # each redraw closes its figure


# ---- diagrams drawn from real objects (sdedu.viz.diagrams) ---------------------------------------


def test_unet_diagram_draws_the_shapes_of_the_config_it_is_given():
    from sdedu.models.unet import UNetConfig
    from sdedu.viz import diagrams

    stages = diagrams.unet_stages()
    assert [s["name"] for s in stages] == [
        "conv_in", "down0", "downsample", "down1", "mid", "up1", "upsample", "up0", "conv_out"
    ]  # fmt: skip
    c0, c1 = UNetConfig().channels
    assert stages[0]["input_shape"] == (4, 8, 8) and stages[-1]["shape"] == (4, 8, 8)
    assert stages[3]["shape"] == (c1, 4, 4) and stages[3]["kind"] == "attn" and stages[2]["kind"] == "resample"
    rng = torch.get_rng_state()
    config = UNetConfig(sample_size=16, channels=(32, 64), head_dim=16, norm_groups=8)
    fig = diagrams.unet_diagram(config)
    assert torch.equal(rng, torch.get_rng_state())  # building the traced model leaves the caller's RNG alone
    assert isinstance(fig, plt.Figure)
    labels = {text.get_text() for text in fig.axes[0].texts}
    assert {"32x16x16", "64x8x8", "4x16x16", "skip (concat)"} <= labels and f"{c1}x4x4" not in labels
    with pytest.raises(TypeError, match="config must be a UNetConfig"):
        diagrams.unet_stages({"channels": (8, 16)})


def test_guidance_vectors_draws_the_plane_of_the_two_predictions_exactly():
    from sdedu.viz import diagrams

    g = torch.Generator().manual_seed(0)
    eps_uncond, eps_cond = torch.randn(4, 8, 8, generator=g), torch.randn(4, 8, 8, generator=g)
    fig = diagrams.guidance_vectors(eps_uncond, eps_cond, scales=(0.0, 1.0, 3.0))
    assert isinstance(fig, plt.Figure)
    dots = [line.get_xydata()[0] for line in fig.axes[1].lines if line.get_marker() == "o"]
    assert len(dots) == 3
    np.testing.assert_allclose(dots[0], [eps_uncond.norm(), 0.0], rtol=1e-5, atol=1e-5)  # w = 0: eps_uncond
    np.testing.assert_allclose(np.linalg.norm(dots[1]), eps_cond.norm(), rtol=1e-5)  # w = 1: eps_cond
    guided = eps_uncond + 3.0 * (eps_cond - eps_uncond)
    np.testing.assert_allclose(np.linalg.norm(dots[2]), guided.norm(), rtol=1e-5)  # in the plane: no length lost
    with pytest.raises(ValueError, match="must not be parallel"):
        diagrams.guidance_vectors(eps_uncond, 2 * eps_uncond)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_ring_allreduce_ends_with_every_sum_on_every_rank(n):
    from sdedu.viz import diagrams

    states = diagrams.ring_allreduce_steps(n)
    assert len(states) == 2 * (n - 1) + 1
    everyone = frozenset(range(n))
    _, after_reduce_scatter, _ = states[n - 1]
    assert all(after_reduce_scatter[r][(r + 1) % n] == everyone for r in range(n))  # each rank owns one full chunk
    _, final, _ = states[-1]
    assert all(chunk == everyone for row in final for chunk in row)
    assert all(
        sorted(r for r, _ in sends) == list(range(n)) for _, _, sends in states[1:]
    )  # one chunk per rank per step
    if n == 4:
        fig = diagrams.ring_allreduce_diagram(n)
        assert isinstance(fig, plt.Figure) and sum(ax.axison or bool(ax.patches) for ax in fig.axes) == len(states)


def test_sample_paths_draws_one_line_per_point_from_x_T_to_x_0():
    paths = {"a": torch.randn(6, 5, 2), "b": torch.randn(3, 5, 2)}
    fig = viz.sample_paths(paths, reference=torch.randn(20, 2))
    first, second = fig.get_axes()
    assert first.get_title() == "a" and len(first.lines) == 5 and len(second.lines) == 5
    np.testing.assert_allclose(second.lines[2].get_xydata(), paths["b"][:, 2].numpy())
    with pytest.raises(ValueError, match=r"shape \(S \+ 1, N, 2\)"):
        viz.sample_paths({"c": torch.randn(4, 5, 3)})
