"""sdedu.compare: a GAN, a VAE and a diffusion model trained on the same points and scored alike."""

from sdedu import compare
from sdedu.data.toy2d import make_moons


def test_compare_generative_models_smoke():
    out = compare.compare_generative_models(make_moons(400, seed=0), steps=5, diffusion_steps=5, progress=False)
    assert set(out["results"]) == {"GAN", "VAE", "diffusion"}
    assert out["reference"].shape == (200, 2)
    for result in out["results"].values():
        assert result.samples.shape == (200, 2)
        assert set(result.distances) == {"mmd", "sliced_w1", "frechet"}
        assert all(v >= -1e-9 for v in result.distances.values())
    assert out["results"]["diffusion"].network_calls == 5 and out["results"]["GAN"].network_calls == 1
    assert out["results"]["diffusion"].schedule is not None and out["results"]["VAE"].model.sample(3).shape == (3, 2)
    # an untrained model is far from the data; the other half of the data is close
    assert out["baseline"]["mmd"] < out["results"]["GAN"].distances["mmd"]
