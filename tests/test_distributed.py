"""Data-parallel training: two CPU ranks under torchrun agree with each other and with one process.

The ranks run `sdedu.training.loop.train(..., distributed=init_from_env(...))` on a tiny UNet, one
thread each, for a few steps. Every launch has a time limit, so a rank that hangs fails the test
instead of freezing the suite.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sdedu.training import distributed as ddp
from sdedu.training.loop import TrainConfig, step_generator, train

TIME_LIMIT_S = 180
STEPS, GLOBAL_BATCH, SEED = 3, 8, 7

# One rank: the test's own problem definition is imported from this file (tests/ is on sys.path).
WORKER = textwrap.dedent("""
    import json, sys
    import torch
    sys.path.insert(0, {tests_dir!r})
    from test_distributed import make_model, make_loss_fn, CONFIG
    from sdedu.training import distributed as ddp
    from sdedu.training.loop import train

    out_dir, result_file, global_batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    context = ddp.init_from_env(threads=1, timeout_s=60)
    batch = ddp.local_batch_size(global_batch, context.world_size)
    model = make_model(seed=100 + context.rank)  # different on purpose: DDP must broadcast rank 0's
    result = train(model, make_loss_fn(batch), CONFIG, out_dir=out_dir, progress=False, distributed=context)
    state = {{name: p.detach().flatten().tolist() for name, p in result.model.state_dict().items()}}
    ema = {{name: p.detach().flatten().tolist() for name, p in result.ema_model.state_dict().items()}}
    with open(result_file.format(rank=context.rank), "w") as f:
        json.dump({{"rank": context.rank, "world_size": context.world_size, "threads": torch.get_num_threads(),
                   "state": state, "ema": ema, "loss": result.final_loss}}, f)
    ddp.exit_rank()
""")

CONFIG = TrainConfig(steps=STEPS, lr=1e-3, warmup_steps=1, ema_decay=0.9, seed=SEED, checkpoint_every=2)


def make_model(seed: int = 0):
    from sdedu.models.unet import UNet, UNetConfig

    torch.manual_seed(seed)
    return UNet(UNetConfig(channels=(16, 32), context_dim=8, head_dim=8, norm_groups=4))


def make_loss_fn(batch_size: int):
    """Ho et al.'s loss on random latents and random text embeddings, all drawn from `generator`."""
    from sdedu.diffusion import noise_prediction_loss
    from sdedu.schedules import NoiseSchedule

    schedule = NoiseSchedule.scaled_linear()

    def loss_fn(model, generator):
        z0 = torch.randn(batch_size, 4, 8, 8, generator=generator)
        cond = torch.randn(batch_size, 5, 8, generator=generator)
        return noise_prediction_loss(model, z0, schedule, generator=generator, cond=cond)

    return loss_fn


def launch(tmp_path: Path, nproc: int = 2, global_batch: int = GLOBAL_BATCH):
    """Run WORKER under torchrun with nproc CPU ranks; returns (completed process, results by rank)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests_dir=str(Path(__file__).parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDEDU_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(script),
        str(tmp_path / "run"),
        str(tmp_path / "rank{rank}.json"),
        str(global_batch),
    ]
    try:
        proc = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired as err:  # the children die with torchrun's process group
        pytest.fail(f"torchrun did not finish within {TIME_LIMIT_S} s:\n{(err.stderr or b'')[-3000:]}")
    results = {}
    for rank in range(nproc):
        path = tmp_path / f"rank{rank}.json"
        if path.exists():
            results[rank] = json.loads(path.read_text())
    return proc, results


def single_process_reference(world_size: int):
    """One process, global batch = the union of the ranks' batches: rank r's generator for step n
    is step_generator(rank_seed(seed, r), n), and the loss is the mean of the ranks' losses."""
    model = make_model(seed=100)  # rank 0's initial weights
    per_rank = make_loss_fn(GLOBAL_BATCH // world_size)
    step = {"n": 0}

    def loss_fn(model, generator):
        n = step["n"]
        step["n"] += 1
        losses = [per_rank(model, step_generator(ddp.rank_seed(SEED, r), n)) for r in range(world_size)]
        return sum(losses) / world_size

    return train(model, loss_fn, CONFIG, progress=False)


def as_tensors(state: dict) -> dict:
    return {name: torch.tensor(values) for name, values in state.items()}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ddp")
    proc, results = launch(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(results) == [0, 1], proc.stderr[-3000:]
    return tmp_path, results


def test_both_ranks_end_with_identical_weights(two_ranks):
    _, results = two_ranks
    assert results[0]["world_size"] == 2 and results[0]["threads"] == 1 and results[1]["threads"] == 1
    rank0, rank1 = as_tensors(results[0]["state"]), as_tensors(results[1]["state"])
    for name in rank0:
        torch.testing.assert_close(rank1[name], rank0[name], rtol=0, atol=1e-6, msg=name)
    ema0, ema1 = as_tensors(results[0]["ema"]), as_tensors(results[1]["ema"])
    for name in ema0:
        torch.testing.assert_close(ema1[name], ema0[name], rtol=0, atol=1e-6, msg=name)
    assert results[0]["loss"] == pytest.approx(results[1]["loss"])  # the logged loss is averaged over ranks


def test_ranks_equal_single_process_training_on_the_global_batch(two_ranks):
    _, results = two_ranks
    reference = single_process_reference(world_size=2)
    got = as_tensors(results[0]["state"])
    initial = make_model(seed=100).state_dict()
    changed = False
    for name, expected in reference.model.state_dict().items():
        torch.testing.assert_close(got[name], expected.flatten(), rtol=1e-4, atol=1e-5, msg=name)
        changed |= not torch.equal(expected, initial[name])
    assert changed  # the weights did move
    assert results[0]["loss"] == pytest.approx(reference.final_loss, rel=1e-4)


def test_only_rank_zero_writes_the_log_and_checkpoint(two_ranks):
    tmp_path, _ = two_ranks
    log = (tmp_path / "run" / "loss.csv").read_text().strip().splitlines()
    assert log[0].startswith("step,loss") and len(log) == 1 + STEPS  # one row per step, not per rank


def test_exit_rank_flushes_and_exits_with_the_status_and_no_interpreter_teardown():
    """Output still in Python's buffers arrives; atexit handlers (interpreter teardown) never run."""
    script = (
        "import atexit, sys\n"
        "from sdedu.training import distributed\n"
        "atexit.register(lambda: print('teardown ran'))\n"
        "sys.stdout.write('result line')\n"
        "sys.stderr.write('a warning')\n"
        "distributed.exit_rank(3)\n"
        "print('unreachable')\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": ""}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "result line", "a warning")
    with pytest.raises(ValueError, match="status must be in"):
        ddp.exit_rank(256)


def test_a_world_size_that_does_not_divide_the_batch_fails_fast(tmp_path):
    proc, results = launch(tmp_path, nproc=2, global_batch=5)
    assert proc.returncode != 0 and not results
    assert "must be divisible by the world size 2" in proc.stderr


# ---- in-process pieces -------------------------------------------------------------------------


def test_local_batch_size():
    assert ddp.local_batch_size(128, 4) == 32
    with pytest.raises(ValueError, match="batch_size 128 .* divisible by the world size 3"):
        ddp.local_batch_size(128, 3)


def test_rank_seed_keeps_rank_zero_and_separates_ranks():
    assert ddp.rank_seed(5, 0) == 5
    assert len({ddp.rank_seed(5, r) for r in range(8)}) == 8


def test_without_torchrun_the_context_is_single_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    try:
        context = ddp.init_from_env(device="cpu", threads=1)
    finally:
        torch.set_num_threads(threads)
    assert (context.rank, context.world_size, context.backend, context.is_main) == (0, 1, None, True)
    assert not context.is_distributed


def test_bad_backend_and_device_are_clear_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ValueError, match="backend 'nccl' needs CUDA"):
        ddp.init_from_env(device="cpu", backend="nccl", threads=1)
    with pytest.raises(ValueError, match="backend must be 'gloo' or 'nccl'"):
        ddp.init_from_env(device="cpu", backend="mpi", threads=1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU is visible"):
            ddp.init_from_env(device="cuda", threads=1)


def test_threads_are_divided_between_local_ranks(monkeypatch):
    monkeypatch.delenv("SDEDU_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert ddp.threads_per_rank(1) == cores
    assert ddp.threads_per_rank(cores * 2) == 1  # never zero
    assert ddp.threads_per_rank(2, threads=3) == 3
    monkeypatch.setenv("SDEDU_THREADS", "1")
    assert ddp.threads_per_rank(1) == 1


def test_per_rank_recipe_divides_the_trained_parts_only():
    from sdedu.training.recipes import Recipe, per_rank_recipe

    recipe = Recipe()
    shared = per_rank_recipe(recipe, 2)
    assert (shared.vae_batch_size, shared.text_batch_size, shared.unet_batch_size) == (
        recipe.vae_batch_size // 2,
        recipe.text_batch_size // 2,
        recipe.unet_batch_size // 2,
    )
    with pytest.raises(ValueError, match=f"unet_batch_size {recipe.unet_batch_size}"):
        per_rank_recipe(recipe, 3, parts=("unet",))
    assert per_rank_recipe(recipe, 1) is recipe
