"""The `sdedu` command: help, generate (with a small random pipeline), argument errors."""

import matplotlib.image
import pytest
import torch

from sdedu import cli
from sdedu.models.text_encoder import TextEncoder, TextEncoderConfig, Tokenizer  # noqa: E402
from sdedu.models.unet import UNet, UNetConfig  # noqa: E402
from sdedu.models.vae import VAE, VAEConfig  # noqa: E402
from sdedu.pipeline import TinyStableDiffusion
from sdedu.schedules import NoiseSchedule


@pytest.fixture
def random_pipeline(monkeypatch):
    """Make from_pretrained return a small random pipeline, so the CLI test is fast and offline."""
    torch.manual_seed(0)
    pipe = TinyStableDiffusion(
        Tokenizer(),
        TextEncoder(TextEncoderConfig(width=32, layers=1, num_heads=2, embed_dim=32)),
        VAE(VAEConfig(channels=(8, 16, 16))),
        UNet(UNetConfig(channels=(32, 32), context_dim=32, head_dim=16, norm_groups=8)),
        NoiseSchedule.scaled_linear(),
    )
    calls = []

    def fake(path=None, device="cpu"):
        calls.append((path, device))
        return pipe

    monkeypatch.setattr(TinyStableDiffusion, "from_pretrained", staticmethod(fake))
    return calls


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "generate" in out and "train" in out and "a large red circle" in out
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    out = capsys.readouterr().out
    assert "--guidance" in out and "--steps" in out and "--seed" in out


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 0
    assert "usage: sdedu" in capsys.readouterr().out


def test_generate_writes_a_grid(tmp_path, random_pipeline, capsys):
    out = tmp_path / "grid.png"
    code = cli.main(
        [
            "generate",
            "a large red circle in the top left",
            "-n",
            "3",
            "--seed",
            "1",
            "-o",
            str(out),
            "--steps",
            "2",
            "--guidance",
            "2",
            "--scale",
            "2",
        ]
    )
    assert code == 0 and out.exists()
    image = matplotlib.image.imread(out)
    # 3 images of 32x32 in one row, 2 px frames, upscaled 2x.
    assert image.shape[:2] == ((32 + 4) * 2, (3 * 34 + 2) * 2)
    assert "wrote" in capsys.readouterr().out
    titled = tmp_path / "titled.png"
    assert cli.main(["generate", "a red shape", "-n", "2", "-o", str(titled), "--steps", "1", "--title"]) == 0
    assert titled.exists()
    assert random_pipeline[0] == (None, "cpu")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["generate", "a red shape", "-n", "0"], "-n/--num-images"),
        (["generate", "a red shape", "-n", "many"], "-n/--num-images"),
        (["generate", "a red shape", "--steps", "0"], "--steps"),
        (["generate", "a red shape", "--guidance", "-1"], "--guidance"),
        (["generate", "a red shape", "--sampler", "euler_b"], "--sampler"),
        (["generate", "a red shape", "--sampler", "euler", "--eta", "0.5"], "--eta"),
        (["generate", "a red shape", "--seed", "-3"], "--seed"),
        (["generate", "a red shape", "-o", "grid.jpg"], "-o/--output"),
        (["generate", "a red shape", "-o", "/no/such/folder/grid.png"], "-o/--output"),
        (["generate"], "prompt"),
        (["paint"], "invalid choice"),
        (["generate", "a red shape", "--guidance", "inf"], "--guidance"),
        (["generate", "a red shape", "--guidance", "nan"], "--guidance"),
        (["generate", "a red shape", "--eta", "2"], "--eta"),
        (["generate", "a red shape", "--device", "gpu"], "--device"),
        (["generate", "a red shape", "-o", "/proc/grid.png"], "-o/--output: cannot write"),
        (["generate", "a red shape", "-o", "/etc/hostname/grid.png"], "is not a folder"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1  # one line, no usage block, no traceback


def test_output_is_checked_before_any_work(tmp_path, random_pipeline, capsys):
    (tmp_path / "folder.png").mkdir()
    for argv, expected in [
        (["-o", str(tmp_path)], "is a folder"),
        (["-o", str(tmp_path / "folder.png")], "is a folder"),
        (["-o", str(tmp_path / "grid")], "expected a .png file name"),
        (["-n", "10000", "-o", str(tmp_path / "big.png")], "-n/--num-images: 10000 images at --scale 4"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["generate", "a red shape", *argv])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1
    assert random_pipeline == []  # no weights were loaded, nothing was generated


def test_large_n_is_generated_in_chunks_with_a_progress_bar(tmp_path, random_pipeline, monkeypatch, capsys):
    one_call = tmp_path / "one.png"
    assert cli.main(["generate", "a red shape", "-n", "5", "--steps", "1", "-o", str(one_call)]) == 0
    monkeypatch.setattr(cli, "CHUNK", 2)
    chunked = tmp_path / "chunked.png"
    assert cli.main(["generate", "a red shape", "-n", "5", "--steps", "1", "-o", str(chunked)]) == 0
    assert "5/5" in capsys.readouterr().err  # the bar counts images
    # Image i draws from seed + i whatever the chunk it is in: the same grid, pixel for pixel.
    assert (matplotlib.image.imread(one_call) == matplotlib.image.imread(chunked)).all()


def test_weights_that_do_not_load_are_one_line(tmp_path, capsys):
    from sdedu.weights import save_component, update_manifest

    torch.manual_seed(0)
    save_component(VAE(VAEConfig(channels=(8, 8, 8), norm_groups=4)), "vae", tmp_path)
    save_component(TextEncoder(TextEncoderConfig(width=16, num_heads=2)), "text_encoder", tmp_path)
    save_component(UNet(UNetConfig(channels=(16, 16), context_dim=16, head_dim=8, norm_groups=4)), "unet", tmp_path)
    update_manifest(tmp_path, schedule={"kind": "scaled_linear", "T": 50})
    out = tmp_path / "grid.png"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "a red shape", "--weights", str(tmp_path), "-o", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "'schedule.T' is 50" in err and err.count("\n") == 1
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(SystemExit):
        cli.main(["generate", "a red shape", "--weights", str(tmp_path), "-o", str(out)])
    err = capsys.readouterr().err
    assert "not valid JSON" in err and err.count("\n") == 1 and not out.exists()


def test_unknown_words_exit_2_listing_the_vocabulary(tmp_path, random_pipeline, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "a purple circle", "-o", str(tmp_path / "x.png"), "--steps", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "purple" in err and "magenta" in err


def test_delegated_subcommand_passes_arguments(monkeypatch):
    import types

    seen = []
    fake = types.SimpleNamespace(main=lambda argv: seen.append(argv) or 0)
    monkeypatch.setitem(__import__("sys").modules, "sdedu.bench", fake)
    assert cli.main(["bench", "--quick", "--json", "x.json"]) == 0
    assert seen == [["--quick", "--json", "x.json"]]


def test_grade_subcommand_reaches_the_grader(capsys):
    """`sdedu grade` is the teacher's grader; a bad argument is an argparse error (exit 2), not a traceback."""
    from sdedu.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["grade", "--cell-timeout", "soon", "x.ipynb"])
    assert exit_info.value.code == 2
    assert "--cell-timeout" in capsys.readouterr().err
