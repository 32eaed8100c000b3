"""Crash-safe checkpoints (issue 13.5): SIGKILL at any instant, resume, and get the same bits.

A child process trains a small MLP and kills itself with SIGKILL (no cleanup, no `finally`) at
points drawn from a seeded generator: during a training step, half-way through writing a
checkpoint, after the new file is on disk but before the swap, and just after the swap. Each
kill is followed by `resume=True` in a fresh process; the final checkpoint must equal an
uninterrupted run's, tensor for tensor, and the loss log row for row.
"""

import csv
import dataclasses
import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from sdedu.training.checkpoint import CHECKPOINT, CheckpointError, has_checkpoint, read_state
from sdedu.training.loop import TrainConfig, train

CONFIG = dict(steps=30, lr=1e-2, warmup_steps=3, ema_decay=0.9, checkpoint_every=4, seed=3)

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    sys.path.insert(0, TESTS)
    from test_checkpoint import CONFIG, _loss, _model
    from sdedu.training import checkpoint
    from sdedu.training.loop import TrainConfig, train

    torch.set_num_threads(1)
    out, phase, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    calls = {"step": 0, "checkpoint": 0}

    def die(where):
        if phase == where:
            os.kill(os.getpid(), signal.SIGKILL)

    def loss(model, generator):
        calls["step"] += 1
        if calls["step"] == kill_at:
            die("step")
        return _loss(model, generator)

    save_file, fsync, replace = checkpoint.save_file, checkpoint._fsync, os.replace

    def save_file_then_maybe_die(tensors, path, metadata):
        calls["checkpoint"] += 1
        save_file(tensors, path, metadata=metadata)
        if calls["checkpoint"] == kill_at and phase == "mid-write":
            with open(path, "r+b") as f:  # a half-written new file
                f.truncate(os.path.getsize(path) // 2)
            die("mid-write")

    def fsync_then_maybe_die(path):
        fsync(path)
        if calls["checkpoint"] == kill_at and str(path).endswith(".tmp"):
            die("before-swap")

    def replace_then_maybe_die(src, dst):
        replace(src, dst)
        if calls["checkpoint"] == kill_at:
            die("after-swap")

    checkpoint.save_file, checkpoint._fsync, os.replace = (
        save_file_then_maybe_die, fsync_then_maybe_die, replace_then_maybe_die
    )
    train(_model(), loss, TrainConfig(**CONFIG), out, resume=True, progress=False)
    """
).replace("TESTS", repr(os.path.dirname(os.path.abspath(__file__))))


def _run_child(script, out, phase, kill_at):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(script), str(out), phase, str(kill_at)], env=env, capture_output=True, timeout=120
    )


def _log(path):
    with open(path) as f:
        return [row[:3] for row in csv.reader(f)]  # step, loss, lr (not the seconds)


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    reference = tmp_path / "reference"  # uninterrupted, in this process: the same functions, config and seed
    train(_model(), _loss, TrainConfig(**CONFIG), reference, progress=False)

    rng = random.Random(13)  # the kill points, drawn once: seeded, so the test is the same every run
    points = [("step", rng.randint(2, 9)), ("mid-write", rng.randint(1, 2)), ("before-swap", rng.randint(1, 2))]
    points.append(("after-swap", rng.randint(1, 2)))
    run, steps_seen = tmp_path / "killed", []
    for phase, kill_at in points:
        killed = _run_child(script, run, phase, kill_at)
        assert killed.returncode == -signal.SIGKILL, (phase, kill_at, killed.stderr.decode()[-2000:])
        # The last complete checkpoint survived, whatever instant the kill hit.
        if has_checkpoint(run):
            steps_seen.append(read_state(run)["step"])
            assert steps_seen[-1] % CONFIG["checkpoint_every"] == 0
            load_file(str(run / CHECKPOINT))  # complete and readable
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > 0  # the kills did not undo progress
    finished = _run_child(script, run, "none", 0)
    assert finished.returncode == 0, finished.stderr.decode()[-2000:]

    ours, theirs = load_file(str(run / CHECKPOINT)), load_file(str(reference / CHECKPOINT))
    assert ours.keys() == theirs.keys()
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name  # model, EMA and optimizer, bit for bit
    assert _log(run / "loss.csv") == _log(reference / "loss.csv")
    assert len(_log(run / "loss.csv")) == CONFIG["steps"] + 1


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _loss(model, generator):
    x = torch.randn(16, 3, generator=generator)
    return (model(x) - x.sum(dim=1, keepdim=True).sin()).pow(2).mean()


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(seed=4), "config.seed"),
        (dict(steps=40), "config.steps"),
        (dict(lr=2e-2), "config.lr"),
    ],
)
def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, change, field):
    train(_model(), _loss, TrainConfig(**CONFIG), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match=f"written with {field} = .*this run has {field} ="):
        train(_model(), _loss, TrainConfig(**{**CONFIG, **change}), tmp_path, resume=True, progress=False)
    # checkpoint_every may change: it does not change the run.
    train(_model(), _loss, TrainConfig(**{**CONFIG, "checkpoint_every": 7}), tmp_path, resume=True, progress=False)


def test_resume_refuses_other_recipe_settings(tmp_path):
    train(_model(), _loss, TrainConfig(**CONFIG), tmp_path, progress=False, settings={"batch_size": 16})
    with pytest.raises(CheckpointError, match="batch_size = 16, this run has batch_size = 32"):
        train(
            _model(), _loss, TrainConfig(**CONFIG), tmp_path, resume=True, progress=False, settings={"batch_size": 32}
        )


def test_the_recipe_refuses_to_resume_with_another_seed(tmp_path):
    from test_training import _tiny_recipe

    from sdedu.training.recipes import train_all

    recipe = _tiny_recipe().with_steps(2, seed=1)
    train_all(tmp_path, recipe, progress=False, evaluate=False, threads=1, parts=("vae",))
    with pytest.raises(CheckpointError, match="config.seed = 1, this run has config.seed = 2"):
        train_all(tmp_path, recipe.with_steps(seed=2), resume=True, progress=False, evaluate=False, parts=("vae",))
    with pytest.raises(CheckpointError, match="vae_batch_size = 4, this run has vae_batch_size = 8"):
        bigger = dataclasses.replace(recipe, vae_batch_size=8)
        train_all(tmp_path, bigger, resume=True, progress=False, evaluate=False, parts=("vae",))


def test_training_time_adds_up_over_resumed_segments(tmp_path):
    calls = {"n": 0}

    def interrupted(model, generator):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return _loss(model, generator)

    with pytest.raises(KeyboardInterrupt):
        train(_model(), interrupted, TrainConfig(**CONFIG), tmp_path, progress=False)
    first = read_state(tmp_path)["extra"]
    assert first["seconds"] > 0 and first["cpu_seconds"] > 0
    resumed = train(_model(), _loss, TrainConfig(**CONFIG), tmp_path, resume=True, progress=False)
    assert resumed.seconds > first["seconds"] and resumed.cpu_seconds > first["cpu_seconds"]
    # Resuming a finished run trains nothing and reports the recorded time and loss.
    again = train(_model(), _loss, TrainConfig(**CONFIG), tmp_path, resume=True, progress=False)
    assert again.final_loss == resumed.final_loss and again.seconds >= read_state(tmp_path)["extra"]["seconds"]
