"""The bad-input catalogue (issue 13.3): what a new or hostile user might pass, and the answer.

Three parts, each a table of cases:
- the library: every public entry answers bad input with the exception type the table says,
  and a message that names the argument (or manifest field) at fault;
- the `sdedu` and `python -m sdedu.train` commands (as a subprocess): exit code 2 and exactly one
  line on stderr naming the argument, never a traceback;
- the grader: `sdedu.grading.check` with broken learner functions raises its AssertionError
  subclass naming the exercise, never crashes.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from sdedu import diffusion, metrics, viz
from sdedu.data import shapes, toy2d
from sdedu.guidance import classifier_free_guidance
from sdedu.models.text_encoder import TextEncoder, TextEncoderConfig, Tokenizer
from sdedu.models.unet import UNet, UNetConfig
from sdedu.models.vae import VAE, VAEConfig
from sdedu.pipeline import TinyStableDiffusion
from sdedu.samplers import DDIMSampler, DDPMSampler
from sdedu.schedules import NoiseSchedule, ScheduleConfig
from sdedu.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sdedu.training.distributed import local_batch_size
from sdedu.training.loop import TrainConfig, train
from sdedu.training.recipes import Recipe
from sdedu.training.toy import train_toy_denoiser
from sdedu.weights import MANIFEST, WeightsError, load_component, load_pretrained, save_component, update_manifest

NAN, INF = float("nan"), float("inf")
PROMPT = "a red circle"


def _tiny_parts():
    torch.manual_seed(0)
    text_encoder = TextEncoder(TextEncoderConfig(width=16, layers=1, num_heads=2, embed_dim=8))
    unet = UNet(UNetConfig(channels=(16, 16), context_dim=16, head_dim=8, norm_groups=4))
    return Tokenizer(), text_encoder, VAE(VAEConfig(channels=(8, 8, 8), norm_groups=4)), unet


@pytest.fixture(scope="module")
def ctx():
    """What the library cases call: a tiny random pipeline, images, a schedule, a UNet."""
    tokenizer, text_encoder, vae, unet = _tiny_parts()
    schedule = NoiseSchedule.linear(T=1000)
    pipe = TinyStableDiffusion(tokenizer, text_encoder, vae, unet, schedule)
    images = shapes.sample(2, seed=0)[0]
    return {
        "pipe": pipe,
        "images": images,
        "schedule": schedule,
        "unet": unet,
        "vae": vae,
        "x": torch.zeros(2, 3, 8, 8),
    }


def _with_nan(x):
    x = x.clone()
    x.view(-1)[3] = NAN
    return x


def _weights(folder, **manifest_fields):
    """A tiny weights folder whose manifest has `manifest_fields` merged in (None deletes a field)."""
    tokenizer, text_encoder, vae, unet = _tiny_parts()
    for name, module in (("vae", vae), ("text_encoder", text_encoder), ("unet", unet)):
        save_component(module, name, folder)
    update_manifest(folder, schedule={"kind": "scaled_linear"})
    manifest = json.loads((folder / MANIFEST).read_text())
    for key, value in manifest_fields.items():
        if value is None:
            manifest.pop(key)
        else:
            manifest[key] = value
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def _component(folder, name, **entry_fields):
    _weights(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["components"][name].update(entry_fields)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def _foreign_checkpoint(folder):
    """Train a run with seed 1, then resume it with seed 2."""
    for seed, resume in ((1, False), (2, True)):
        model = torch.nn.Linear(2, 1)
        config = TrainConfig(steps=2, warmup_steps=1, seed=seed)
        train(
            model, lambda m, g: m(torch.randn(4, 2, generator=g)).pow(2).mean(), config, folder, resume, progress=False
        )


# ---- 1. the library --------------------------------------------------------------------------------

P = pytest.param
LIBRARY = [
    # pipeline (text to image, image to image, inpainting, the parts)
    P(lambda c, tmp: c["pipe"](PROMPT, guidance_scale=INF), ValueError, "guidance_scale", id="pipe guidance inf"),
    P(lambda c, tmp: c["pipe"](PROMPT, guidance_scale=NAN), ValueError, "guidance_scale", id="pipe guidance nan"),
    P(lambda c, tmp: c["pipe"](PROMPT, guidance_scale=-1.0), ValueError, "guidance_scale", id="pipe guidance < 0"),
    P(lambda c, tmp: c["pipe"](PROMPT, eta=2.0), ValueError, "eta", id="pipe ddim eta 2"),
    P(lambda c, tmp: c["pipe"](PROMPT, sampler="ddpm", eta=0.5), ValueError, "eta", id="pipe eta with ddpm"),
    P(lambda c, tmp: c["pipe"](PROMPT, sampler="plms"), ValueError, "sampler", id="pipe unknown sampler"),
    P(lambda c, tmp: c["pipe"](PROMPT, num_inference_steps=0), ValueError, "num_inference_steps", id="pipe 0 steps"),
    P(lambda c, tmp: c["pipe"](PROMPT, seed=-1), ValueError, "seed", id="pipe negative seed"),
    P(lambda c, tmp: c["pipe"](PROMPT, seed=1.5), TypeError, "seed", id="pipe float seed"),
    P(lambda c, tmp: c["pipe"]([]), TypeError, "prompt", id="pipe empty prompt list"),
    P(lambda c, tmp: c["pipe"](3), TypeError, "prompt", id="pipe prompt int"),
    P(lambda c, tmp: c["pipe"]("a purple circle"), ValueError, "purple", id="pipe unknown word"),
    P(
        lambda c, tmp: c["pipe"](PROMPT, num_images_per_prompt=0),
        ValueError,
        "num_images_per_prompt",
        id="pipe 0 images",
    ),
    P(lambda c, tmp: c["pipe"].img2img(_with_nan(c["images"]), PROMPT), ValueError, "image", id="img2img NaN pixel"),
    P(lambda c, tmp: c["pipe"].img2img(c["images"].numpy(), PROMPT), TypeError, "image", id="img2img numpy"),
    P(lambda c, tmp: c["pipe"].img2img(c["images"][:0], PROMPT), ValueError, "image", id="img2img empty batch"),
    P(
        lambda c, tmp: c["pipe"].img2img(c["images"], PROMPT, strength=1.5),
        ValueError,
        "strength",
        id="img2img strength",
    ),
    P(
        lambda c, tmp: c["pipe"].inpaint(c["images"], _with_nan(torch.zeros(1, 32, 32)), PROMPT),
        ValueError,
        "mask",
        id="inpaint NaN mask",
    ),
    P(lambda c, tmp: c["pipe"].decode_latents(np.zeros((1, 4, 8, 8))), TypeError, "z", id="decode numpy latents"),
    P(lambda c, tmp: c["pipe"].decode_latents(torch.zeros(1, 3, 8, 8)), ValueError, "z", id="decode wrong shape"),
    P(lambda c, tmp: c["pipe"].encode_images(torch.zeros(1, 3, 64, 64)), ValueError, "images", id="encode 64x64"),
    P(lambda c, tmp: c["pipe"].to("gpu"), ValueError, "device", id="pipe device gpu"),
    P(lambda c, tmp: TinyStableDiffusion.from_pretrained(123), TypeError, "path", id="from_pretrained(123)"),
    # schedules and samplers
    P(lambda c, tmp: NoiseSchedule.linear(T=0), ValueError, "T", id="schedule T 0"),
    P(lambda c, tmp: NoiseSchedule.linear(T=INF), TypeError, "T", id="schedule T inf"),
    P(lambda c, tmp: NoiseSchedule.linear(beta_start=NAN), ValueError, "beta_start", id="schedule beta nan"),
    P(lambda c, tmp: NoiseSchedule([0.1, 0.2]), TypeError, "betas", id="schedule betas list"),
    P(lambda c, tmp: NoiseSchedule(torch.tensor([0.3, 0.1])), ValueError, "betas", id="schedule betas decreasing"),
    P(lambda c, tmp: ScheduleConfig(kind="sigmoid"), ValueError, "kind", id="schedule config kind"),
    P(lambda c, tmp: ScheduleConfig("cosine", beta_end=0.02), ValueError, "beta range", id="cosine with betas"),
    P(lambda c, tmp: DDIMSampler(c["schedule"], eta=2.0), ValueError, "eta", id="ddim eta 2"),
    P(lambda c, tmp: DDIMSampler(c["schedule"], eta=NAN), ValueError, "eta", id="ddim eta nan"),
    P(lambda c, tmp: DDIMSampler("linear"), TypeError, "schedule", id="ddim schedule str"),
    P(lambda c, tmp: DDPMSampler(c["schedule"]).set_timesteps(1001), ValueError, "steps", id="ddpm steps > T"),
    # diffusion maths, guidance
    P(lambda c, tmp: diffusion.q_sample(c["x"], 1000, c["schedule"]), ValueError, "t", id="q_sample t = T"),
    P(lambda c, tmp: diffusion.q_sample(np.zeros((1, 3, 4, 4)), 3, c["schedule"]), TypeError, "x0", id="q_sample np"),
    P(
        lambda c, tmp: diffusion.q_sample(c["x"], 3, c["schedule"], noise=c["x"][:1]),
        ValueError,
        "noise",
        id="q_sample noise shape",
    ),
    P(lambda c, tmp: classifier_free_guidance(c["x"], c["x"], NAN), ValueError, "guidance_scale", id="cfg nan"),
    # models and tokenizer
    P(
        lambda c, tmp: c["unet"](torch.zeros(1, 3, 8, 8), torch.tensor([1]), torch.zeros(1, 12, 16)),
        ValueError,
        "x_t",
        id="unet channels",
    ),
    P(
        lambda c, tmp: c["unet"](torch.zeros(1, 4, 8, 8), torch.tensor([1000]), torch.zeros(1, 12, 16)),
        ValueError,
        "t",
        id="unet t = T",
    ),
    P(lambda c, tmp: c["vae"].encode(torch.zeros(1, 3, 16, 16)), ValueError, "images", id="vae 16x16 images"),
    P(lambda c, tmp: VAEConfig(reconstruction="l3"), ValueError, "reconstruction", id="vae config loss"),
    P(
        lambda c, tmp: Tokenizer()(["a large red circle in the top left " * 3]),
        ValueError,
        "words",
        id="prompt too long",
    ),
    P(lambda c, tmp: Tokenizer()([3]), TypeError, "prompt", id="prompt not a str"),
    # data, metrics, viz
    P(lambda c, tmp: shapes.sample(-2), ValueError, "n", id="shapes n < 0"),
    P(lambda c, tmp: shapes.caption({"shape": "hexagon"}), ValueError, "shape", id="caption hexagon"),
    P(lambda c, tmp: toy2d.make_moons(0), ValueError, "n", id="moons n 0"),
    P(lambda c, tmp: metrics.psnr(c["x"], c["x"][:1]), ValueError, "reference", id="psnr shapes"),
    P(lambda c, tmp: metrics.adherence(c["images"], [PROMPT]), ValueError, "prompts", id="adherence lengths"),
    P(lambda c, tmp: viz.image_grid(torch.zeros(3, 8, 8)), ValueError, "images", id="grid 3-D"),
    P(lambda c, tmp: viz.image_grid(np.zeros((2, 3, 8, 8))), TypeError, "images", id="grid numpy"),
    P(lambda c, tmp: viz.image_grid(torch.zeros(0, 3, 8, 8)), ValueError, "images", id="grid empty batch"),
    P(lambda c, tmp: viz.to_numpy_images(c["x"], value_range=(1.0, 0.0)), ValueError, "value_range", id="grid range"),
    # training
    P(lambda c, tmp: TrainConfig(steps=0), ValueError, "steps", id="train steps 0"),
    P(lambda c, tmp: TrainConfig(lr=NAN), ValueError, "lr", id="train lr nan"),
    P(lambda c, tmp: TrainConfig(lr=INF), ValueError, "lr", id="train lr inf"),
    P(lambda c, tmp: TrainConfig(ema_decay=2.0), ValueError, "ema_decay", id="train ema 2"),
    P(lambda c, tmp: TrainConfig(seed="a"), TypeError, "seed", id="train seed str"),
    P(lambda c, tmp: TrainConfig(weight_decay=-1.0), ValueError, "weight_decay", id="train weight decay < 0"),
    P(lambda c, tmp: train(torch.nn.Linear(1, 1), "mse", TrainConfig()), TypeError, "loss_fn", id="train loss str"),
    P(lambda c, tmp: Recipe(schedule=ScheduleConfig(T=50)), ValueError, "schedule.T", id="recipe T 50"),
    P(lambda c, tmp: Recipe(p_uncond=1.5), ValueError, "p_uncond", id="recipe p_uncond"),
    P(lambda c, tmp: Recipe(unet_batch_size=0), ValueError, "unet_batch_size", id="recipe batch 0"),
    P(lambda c, tmp: Recipe().with_steps(0), ValueError, "steps", id="recipe 0 steps"),
    P(lambda c, tmp: local_batch_size(10, 3), ValueError, "batch_size", id="ddp batch 10 on 3"),
    P(lambda c, tmp: train_toy_denoiser(torch.full((5, 2), NAN), c["schedule"]), ValueError, "points", id="toy NaN"),
    P(lambda c, tmp: train_toy_denoiser(torch.zeros(5), c["schedule"]), ValueError, "points", id="toy 1-D points"),
    P(lambda c, tmp: _foreign_checkpoint(tmp), CheckpointError, "config.seed", id="resume another seed"),
    P(
        lambda c, tmp: (
            save_checkpoint(tmp, 1, torch.nn.Linear(1, 1), torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), 0.1)),
            (tmp / "checkpoint.safetensors").write_bytes(b"junk"),
            load_checkpoint(tmp, torch.nn.Linear(1, 1)),
        ),
        CheckpointError,
        "checkpoint.safetensors",
        id="checkpoint junk",
    ),
    # weights and manifests
    P(
        lambda c, tmp: load_pretrained(_weights(tmp, schedule={"kind": "linear", "T": 50})),
        WeightsError,
        "schedule.T",
        id="manifest T 50",
    ),
    P(
        lambda c, tmp: load_pretrained(_component(tmp, "vae", file="../x.safetensors")),
        WeightsError,
        "components.vae.file",
        id="manifest ../x",
    ),
    P(
        lambda c, tmp: load_pretrained(_component(tmp, "unet", sha256=7)),
        WeightsError,
        "components.unet.sha256",
        id="manifest sha int",
    ),
    P(
        lambda c, tmp: load_pretrained(_weights(tmp, schedule=None)),
        WeightsError,
        "schedule",
        id="manifest no schedule",
    ),
    P(
        lambda c, tmp: load_pretrained(_weights(tmp, tokenizer={"max_length": 30})),
        WeightsError,
        "tokenizer.max_length",
        id="manifest tokenizer",
    ),
    P(
        lambda c, tmp: load_pretrained(_weights(tmp, components=[])),
        WeightsError,
        "components",
        id="manifest components list",
    ),
    P(
        lambda c, tmp: (_weights(tmp), (tmp / MANIFEST).write_text("{oops"), load_component("vae", tmp)),
        WeightsError,
        MANIFEST,
        id="manifest bad JSON",
    ),
    P(lambda c, tmp: load_pretrained(device="gpu"), ValueError, "device", id="load_pretrained gpu"),
    P(lambda c, tmp: load_component("vae", device="tpu:9"), ValueError, "device", id="load_component tpu"),
    P(lambda c, tmp: save_component(torch.nn.Linear(1, 1), "lin", tmp), TypeError, "config", id="save plain module"),
    P(lambda c, tmp: save_component(c["vae"], "../vae", tmp), ValueError, "name", id="save name ../vae"),
]


@pytest.mark.parametrize("call, error, names", LIBRARY)
def test_library_refuses_bad_input_naming_the_argument(ctx, tmp_path, call, error, names):
    with pytest.raises(error) as info:
        call(ctx, tmp_path)
    assert names in str(info.value), f"the message should name {names!r}: {info.value}"


# ---- 2. the commands ---------------------------------------------------------------------------------

COMMANDS = [
    P(["generate", PROMPT, "-n", "0"], "-n/--num-images", id="generate -n 0"),
    P(["generate", PROMPT, "-n", "many"], "-n/--num-images", id="generate -n many"),
    P(["generate", PROMPT, "--steps", "0"], "--steps", id="generate --steps 0"),
    P(["generate", PROMPT, "--guidance", "inf"], "--guidance", id="generate --guidance inf"),
    P(["generate", PROMPT, "--guidance", "-1"], "--guidance", id="generate --guidance -1"),
    P(["generate", PROMPT, "--eta", "2"], "--eta", id="generate --eta 2"),
    P(["generate", PROMPT, "--sampler", "plms"], "--sampler", id="generate --sampler plms"),
    P(["generate", PROMPT, "--seed", "-3"], "--seed", id="generate --seed -3"),
    P(["generate", PROMPT, "--device", "gpu"], "--device", id="generate --device gpu"),
    P(["generate", PROMPT, "-o", "grid.jpg"], "-o/--output", id="generate -o jpg"),
    P(["generate", PROMPT, "-o", "{tmp}"], "-o/--output", id="generate -o folder"),
    P(["generate", PROMPT, "-o", "{tmp}/no/such/grid.png"], "-o/--output", id="generate -o missing folder"),
    P(["generate", PROMPT, "-o", "/proc/grid.png"], "-o/--output", id="generate -o unwritable"),
    P(["generate", PROMPT, "-n", "100000", "-o", "{tmp}/g.png"], "-n/--num-images", id="generate grid too big"),
    P(["generate", PROMPT, "--weights", "{tmp}/none", "-o", "{tmp}/g.png"], "--weights", id="generate no weights"),
    P(["generate", PROMPT, "--weights", "{weights_T50}", "-o", "{tmp}/g.png"], "schedule.T", id="generate T 50"),
    P(["paint"], "invalid choice", id="unknown command"),
    P(["train", "pixels"], "invalid choice", id="train pixels"),
    P(["train", "vae", "--steps", "0"], "--steps", id="train --steps 0"),
    P(["train", "vae", "--device", "gpu"], "--device", id="train --device gpu"),
]


@pytest.mark.parametrize("argv, names", COMMANDS)
def test_commands_answer_bad_input_in_one_line(tmp_path, argv, names):
    fields = {"tmp": str(tmp_path)}
    if any("{weights_T50}" in a for a in argv):
        fields["weights_T50"] = str(_weights(tmp_path / "w", schedule={"kind": "scaled_linear", "T": 50}))
    argv = [a.format(**fields) for a in argv]
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "sdedu.cli", *argv], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert names in done.stderr and ": error: " in done.stderr, done.stderr


# ---- 3. the grader -----------------------------------------------------------------------------------


def _stub(*args, **kwargs):
    raise NotImplementedError


def _divides_by_zero(*args, **kwargs):
    return 1 / 0


def _returns_none(*args, **kwargs):
    return None


def _returns_numpy(*args, **kwargs):
    return np.zeros((2, 2))


def _returns_nan(x, *args, **kwargs):
    return torch.full_like(x, NAN)


def _takes_nothing():
    return 0


def _recurses(*args, **kwargs):
    return _recurses(*args, **kwargs)


def _exits(*args, **kwargs):
    sys.exit(3)


BROKEN = [_stub, _divides_by_zero, _returns_none, _returns_numpy, _returns_nan, _takes_nothing, _recurses]
GRADER = [
    P(item, fn, id=f"{item}: {fn.__name__[1:]}") for item in ("forward_diffusion", "reverse_diffusion") for fn in BROKEN
]
GRADER += [P("timestep_embedding", fn, id=f"timestep_embedding: {fn.__name__[1:]}") for fn in BROKEN[:4]]
GRADER += [
    P("image_grid", _returns_none, id="image_grid: returns_none"),
    P("training_step", _recurses, id="training_step: recurses"),
]
GRADER += [P("forward_diffusion", _exits, id="forward_diffusion: calls sys.exit")]


@pytest.mark.parametrize("item, learner_function", GRADER)
def test_grader_fails_broken_answers_with_its_assertion_error(item, learner_function):
    from sdedu.grading import ExerciseFailed, ExerciseIncomplete, check

    with pytest.raises(AssertionError) as info:
        check(item, learner_function)
    assert isinstance(info.value, (ExerciseFailed, ExerciseIncomplete))
    assert item in str(info.value)


def test_the_catalogue_is_large():
    assert len(LIBRARY) + len(COMMANDS) + len(GRADER) >= 60
