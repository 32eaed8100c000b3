"""sdedu.anatomy: shape traces, parameter counts and the cost of a training step, on a tiny random UNet."""

import pytest
import torch

from sdedu.anatomy import (
    format_shape_table,
    parameter_counts,
    parameter_counts_by_kind,
    trace_shapes,
    training_step_seconds,
)
from sdedu.models.unet import UNet, UNetConfig
from sdedu.nn.blocks import ResBlock, SpatialTransformer
from sdedu.schedules import NoiseSchedule


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet(UNetConfig(channels=(32, 64), context_dim=16, head_dim=16, norm_groups=8)).eval()


def unet_inputs(B=2, L=5):
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 4, 8, 8, generator=g), torch.tensor([3, 700])[:B], torch.randn(B, L, 16, generator=g)


def test_trace_shapes_records_calls_in_order_with_their_shapes(unet):
    records = trace_shapes(unet, *unet_inputs())
    names = [r.name for r in records]
    assert names[:3] == ["time_embedding", "conv_in", "down0_res"] and names[-1] == "conv_out"
    by_name = {r.name: r for r in records}
    assert by_name["time_embedding"].inputs == [(2,)] and by_name["time_embedding"].output == (2, 128)
    assert by_name["downsample"].output == (2, 32, 4, 4)
    # The up path's ResBlock sees the skip connection concatenated on the channel axis.
    assert by_name["up1_res"].inputs == [(2, 128, 4, 4), (2, 128)]
    assert by_name["up0_attn"].inputs == [(2, 32, 8, 8), (2, 5, 16)]
    assert by_name["conv_out"].output == (2, 4, 8, 8)
    assert by_name["conv_in"].parameters == sum(p.numel() for p in unet.conv_in.parameters())


def test_trace_shapes_removes_its_hooks_and_goes_deeper(unet):
    deeper = trace_shapes(unet, *unet_inputs(), depth=2)
    assert any(r.name == "down0_attn.blocks" for r in deeper) is False  # ModuleLists are never called
    assert "down0_res.conv1" in [r.name for r in deeper]
    assert all(not m._forward_hooks for m in unet.modules())


def test_format_shape_table_lists_every_record(unet):
    records = trace_shapes(unet, *unet_inputs())
    table = format_shape_table(records)
    lines = table.splitlines()
    assert len(lines) == len(records) + 2  # header and rule
    assert "up1_res" in table and "(2, 128, 4, 4), (2, 128)" in table


def test_trace_shapes_rejects_bad_arguments(unet):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        trace_shapes(lambda x: x, torch.zeros(1))
    with pytest.raises(ValueError, match="depth must be in"):
        trace_shapes(unet, *unet_inputs(), depth=0)


def test_parameter_counts_add_up_to_the_total(unet):
    total = sum(p.numel() for p in unet.parameters())
    counts = parameter_counts(unet)
    assert sum(counts.values()) == total
    assert list(counts)[:2] == ["time_embedding", "conv_in"]
    assert counts["mid_attn"] == sum(p.numel() for p in unet.mid_attn.parameters())
    deeper = parameter_counts(unet, depth=2)
    assert sum(deeper.values()) == total and "mid_attn.blocks" in deeper


def test_parameter_counts_by_kind_assigns_each_parameter_once(unet):
    counts = parameter_counts_by_kind(unet, (ResBlock, SpatialTransformer))
    assert sum(counts.values()) == sum(p.numel() for p in unet.parameters())
    res = sum(p.numel() for m in unet.modules() if isinstance(m, ResBlock) for p in m.parameters())
    assert counts["ResBlock"] == res and counts["other"] > 0
    with pytest.raises(TypeError, match="kinds must be"):
        parameter_counts_by_kind(unet, ["ResBlock"])


def test_training_step_seconds_leaves_the_model_unchanged(unet):
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    x0, _, cond = unet_inputs()
    seconds = training_step_seconds(unet, x0, NoiseSchedule.linear(), repeats=2, warmup=0, cond=cond)
    assert seconds > 0
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())
    with pytest.raises(ValueError, match="repeats must be in"):
        training_step_seconds(unet, x0, NoiseSchedule.linear(), repeats=0, cond=cond)
