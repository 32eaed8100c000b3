"""sdedu.training: EMA, learning-rate schedule, safetensors checkpoints, exact resumption, the recipe."""

import csv

import pytest
import torch
from torch import nn

from sdedu.training.checkpoint import CheckpointError, has_checkpoint, load_checkpoint, read_state, save_checkpoint
from sdedu.training.ema import EMA
from sdedu.training.loop import TrainConfig, learning_rate, set_threads, step_generator, train


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


def _loss(model, generator):
    x = torch.randn(16, 3, generator=generator)
    y = x.sum(dim=1, keepdim=True).sin()
    return (model(x) - y).pow(2).mean()


CONFIG = TrainConfig(steps=12, lr=1e-2, warmup_steps=3, ema_decay=0.9, checkpoint_every=5, seed=3)


def test_ema_update_formula():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.9, warmup=False)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)
    assert not ema.module.weight.requires_grad


def test_ema_warmup_decay():
    ema = EMA(nn.Linear(1, 1), decay=0.999)
    assert ema.current_decay() == pytest.approx(1 / 10)
    ema.num_updates = 10_000
    assert ema.current_decay() == 0.999


def test_learning_rate_warmup_then_cosine():
    config = TrainConfig(steps=100, lr=1.0, warmup_steps=10)
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(9, config) == pytest.approx(1.0)
    assert learning_rate(55, config) == pytest.approx(0.5)  # half way through the cosine
    assert learning_rate(100, config) == pytest.approx(0.0, abs=1e-12)


def test_step_generator_depends_on_seed_and_step_only():
    a = torch.rand(3, generator=step_generator(1, 5))
    assert torch.equal(a, torch.rand(3, generator=step_generator(1, 5)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(1, 6)))
    assert not torch.equal(a, torch.rand(3, generator=step_generator(2, 5)))


def test_train_reduces_the_loss_and_logs_csv(tmp_path):
    model = _model()
    before = _loss(model, step_generator(0, 999)).item()
    result = train(model, _loss, TrainConfig(steps=60, lr=1e-2, warmup_steps=5), tmp_path, progress=False)
    assert _loss(result.ema_model, step_generator(0, 999)).item() < before
    with open(tmp_path / "loss.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "loss", "lr", "seconds"] and len(rows) == 61
    assert has_checkpoint(tmp_path)


def test_checkpoint_round_trip(tmp_path):
    model = _model()
    train(model, _loss, CONFIG, tmp_path, progress=False)
    restored, optimizer = _model(), None
    optimizer = torch.optim.AdamW(restored.parameters())
    ema = EMA(restored, 0.9)
    state = load_checkpoint(tmp_path, restored, optimizer, ema)
    assert state["step"] == CONFIG.steps and ema.num_updates == CONFIG.steps
    for a, b in zip(model.parameters(), restored.parameters()):
        assert torch.equal(a, b)
    assert all("exp_avg" in s for s in optimizer.state.values())
    assert read_state(tmp_path)["step"] == CONFIG.steps


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path):
    straight = train(_model(), _loss, CONFIG, tmp_path / "a", progress=False)

    calls = {"n": 0}

    def interrupted_loss(model, generator):
        calls["n"] += 1
        if calls["n"] == 8:  # Ctrl-C during step 7's forward pass
            raise KeyboardInterrupt
        return _loss(model, generator)

    with pytest.raises(KeyboardInterrupt):
        train(_model(), interrupted_loss, CONFIG, tmp_path / "b", progress=False)
    assert read_state(tmp_path / "b")["step"] == 7
    resumed = train(_model(), _loss, CONFIG, tmp_path / "b", resume=True, progress=False)

    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema_model.parameters(), resumed.ema_model.parameters()):
        assert torch.equal(a, b)
    rows_a = [r[:3] for r in csv.reader(open(tmp_path / "a" / "loss.csv"))]
    rows_b = [r[:3] for r in csv.reader(open(tmp_path / "b" / "loss.csv"))]
    assert rows_a == rows_b and len(rows_a) == CONFIG.steps + 1


def test_on_checkpoint_sees_every_checkpoint_and_changes_nothing(tmp_path):
    seen = []

    def on_checkpoint(step, model, seconds, cpu_seconds):
        seen.append((step, model, seconds, cpu_seconds))

    plain = train(_model(), _loss, CONFIG, tmp_path / "a", progress=False)
    hooked = train(_model(), _loss, CONFIG, tmp_path / "b", progress=False, on_checkpoint=on_checkpoint)
    assert [s[0] for s in seen] == [5, 10, 12]  # checkpoint_every = 5, and the last step
    assert all(s[1] is hooked.ema_model for s in seen)
    assert all(s[2] > 0 and s[3] >= 0 for s in seen) and seen[0][2] < seen[-1][2]
    for a, b in zip(plain.ema_model.parameters(), hooked.ema_model.parameters()):
        assert torch.equal(a, b)


def test_unreadable_checkpoint_is_refused(tmp_path):
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters())
    path = save_checkpoint(tmp_path, 4, model, optimizer)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path, model, optimizer)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nowhere", model)


def test_bf16_autocast_runs():
    result = train(_model(), _loss, TrainConfig(steps=2, warmup_steps=1, bf16=True), progress=False)
    assert result.final_loss == result.final_loss  # not NaN


def test_bad_config_and_threads(monkeypatch):
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    monkeypatch.setenv("SDEDU_THREADS", "1")
    assert set_threads() == 1


def test_tiny_recipe_end_to_end(tmp_path):
    """All three parts at toy sizes; the weights it writes load and generate."""
    from sdedu.models.text_encoder import TextEncoderConfig
    from sdedu.models.unet import UNetConfig
    from sdedu.models.vae import VAEConfig
    from sdedu.pipeline import TinyStableDiffusion
    from sdedu.training.recipes import Recipe, train_all
    from sdedu.weights import read_manifest

    recipe = Recipe(
        vae=VAEConfig(channels=(8, 8, 8), norm_groups=4),
        text=TextEncoderConfig(width=16, layers=1, num_heads=2, embed_dim=8),
        unet=UNetConfig(channels=(16, 16), context_dim=16, head_dim=8, norm_groups=4),
        vae_batch_size=4,
        text_batch_size=8,
        unet_batch_size=4,
        latent_bank=16,
        scale_factor_images=16,
    ).with_steps(2, seed=1)
    weights = train_all(tmp_path, recipe, progress=False, evaluate=False, threads=1)
    manifest = read_manifest(weights)
    assert set(manifest["components"]) == {"vae", "text_encoder", "unet"}
    assert manifest["seed"] == 1 and manifest["recipe"]["unet_train"]["steps"] == 2
    assert manifest["components"]["vae"]["training"]["psnr_db"] > 0
    assert manifest["training_seconds"]["total"] > 0
    for part in ("vae", "text", "unet"):
        assert (tmp_path / part / "loss.csv").is_file()
    pipe = TinyStableDiffusion.from_pretrained(weights)
    images = pipe(["a red circle"], num_inference_steps=2, seed=0)
    assert images.shape == (1, 3, 32, 32)
    # The UNet alone can be retrained against the VAE and text encoder already saved.
    train_all(tmp_path, recipe, progress=False, evaluate=False, parts=("unet",), threads=1)


def _tiny_recipe():
    from sdedu.models.text_encoder import TextEncoderConfig
    from sdedu.models.unet import UNetConfig
    from sdedu.models.vae import VAEConfig
    from sdedu.training.recipes import Recipe

    return Recipe(
        vae=VAEConfig(channels=(8, 8, 8), norm_groups=4),
        text=TextEncoderConfig(width=16, layers=1, num_heads=2, embed_dim=8),
        unet=UNetConfig(channels=(16, 16), context_dim=16, head_dim=8, norm_groups=4),
        vae_batch_size=4,
        text_batch_size=8,
        unet_batch_size=4,
        latent_bank=16,
        scale_factor_images=16,
    )


def _weight_hashes(weights) -> dict:
    from sdedu.weights import sha256_file

    return {path.name: sha256_file(path) for path in sorted(weights.glob("*.safetensors"))}


def test_same_recipe_and_seed_give_identical_weight_files(tmp_path):
    """Issue 13: every part's initialisation and every random draw come from the recipe's seed,
    so two runs (whatever the global RNG did before) write byte-identical weights."""
    from sdedu.training.recipes import train_all

    recipe = _tiny_recipe().with_steps(2, seed=4)
    hashes = []
    for run, global_seed in enumerate((0, 12345)):
        torch.manual_seed(global_seed)  # the global RNG must not matter
        torch.rand(run + 1)
        weights = train_all(tmp_path / f"run{run}", recipe, progress=False, evaluate=False, threads=1)
        hashes.append(_weight_hashes(weights))
    assert set(hashes[0]) == {"vae.safetensors", "text_encoder.safetensors", "unet.safetensors"}
    assert hashes[0] == hashes[1]
    other = train_all(tmp_path / "other", recipe.with_steps(seed=5), progress=False, evaluate=False, threads=1)
    differs = {name for name, digest in _weight_hashes(other).items() if digest != hashes[0][name]}
    assert differs == set(hashes[0])  # another seed: other weights, every part


def test_cli_parses_and_rejects_bad_steps(capsys):
    from sdedu.train import build_parser, main

    args = build_parser().parse_args(["unet", "--steps", "5", "--resume", "--bf16"])
    assert (args.part, args.steps, args.resume, args.bf16) == ("unet", 5, True, True)
    with pytest.raises(SystemExit):
        main(["vae", "--steps", "0"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pixels"])


def test_cli_training_errors_are_one_line(tmp_path, capsys):
    """A checkpoint of another run, and weights that do not load, end as one usage line (exit code 2)."""
    from sdedu.train import main

    common = ["--out", str(tmp_path), "--no-progress", "--threads", "1"]
    assert main(["memorise", "--steps", "1", *common]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(["memorise", "--steps", "2", "--resume", *common])
    assert refused.value.code == 2 and "argument --resume: " in capsys.readouterr().err
    (tmp_path / "weights" / "manifest.json").write_text("{not json")
    with pytest.raises(SystemExit) as broken:
        main(["unet", "--steps", "1", *common])
    assert broken.value.code == 2 and "argument --out: the weights already in it do not load" in capsys.readouterr().err


def test_caption_matches_for_the_contrastive_targets():
    from sdedu.training.recipes import captions_for, matches

    red_circle = {"shape": "circle", "color": "red", "size": "small", "position": "center"}
    blue_square = {"shape": "square", "color": "blue", "size": "large", "position": "top left"}
    named = [{"color": "red"}, {"shape": "square", "size": "large"}, {}]
    assert matches([red_circle, blue_square], named).tolist() == [[True, False, True], [False, True, True]]
    captions, named = captions_for([red_circle] * 50, torch.Generator().manual_seed(0), p_full=0.5, p_drop=0.5)
    assert matches([red_circle], named).all()  # a caption always matches its own image
    assert "a small red circle in the center" in captions and len(set(captions)) > 3


def test_unet_adherence_log_leaves_the_weights_unchanged(tmp_path, monkeypatch):
    """The UNet recipe's adherence at every checkpoint (evaluate=True) is logged with the training time
    so far, and the weights are identical to those of a run without it."""
    import json
    from dataclasses import replace

    from sdedu.training import parts
    from sdedu.training.recipes import train_all
    from sdedu.weights import load_component

    monkeypatch.setattr(parts, "CHECKPOINT_PROMPTS", 4)
    recipe = _tiny_recipe().with_steps(2, seed=3)
    recipe = replace(recipe, unet_train=replace(recipe.unet_train, checkpoint_every=1))
    weights = train_all(tmp_path, recipe, progress=False, evaluate=False, threads=1)
    frozen = load_component("vae", weights), load_component("text_encoder", weights)
    unet, info = parts.train_unet(recipe, *frozen, tmp_path / "logged", progress=False, evaluate=True)
    for a, b in zip(load_component("unet", weights).state_dict().values(), unet.state_dict().values()):
        assert torch.equal(a, b)
    log = info["adherence_log"]
    assert [row["step"] for row in log] == [1, 2] and log[0]["cpu_seconds"] <= log[1]["cpu_seconds"]
    assert log[0]["full_prompts"]["n"] == 4 and log[0]["seconds"] >= info["latent_bank_seconds"]
    assert json.loads((tmp_path / "logged" / "unet" / "adherence.json").read_text()) == log
    assert "time_to_target" in info  # None: a 2-step toy does not reach the target
