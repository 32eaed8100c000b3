"""Our MM-DiT in diffusers' clothes: the same weights in `SD3Transformer2DModel` (diffusers 0.42).

    reference = to_diffusers(mmdit)              an SD3Transformer2DModel holding mmdit's weights
    reference(x_t, encoder_hidden_states=cond, pooled_projections=pooled, timestep=t).sample == mmdit(x_t, t, cond, pooled)

What each part of ours is called there (`DIFFUSERS_NAMES`): the names are the same except where
we fuse Q, K and V into one matrix and name the MLP's two layers. tests/test_mmdit.py uses this
to check the whole model, and its blocks, against diffusers; notebook 19 prints the table.
"""

from __future__ import annotations

import torch

from sdedu.models.mmdit import MMDiT

#: our name fragment -> diffusers' (to_qkv and add_qkv are split in three, see `diffusers_state_dict`)
DIFFUSERS_NAMES = {
    "time_text_embed.text_linear_1": "time_text_embed.text_embedder.linear_1",
    "time_text_embed.text_linear_2": "time_text_embed.text_embedder.linear_2",
    "attn.to_out": "attn.to_out.0",
    "ff.proj_in": "ff.net.0.proj",
    "ff.proj_out": "ff.net.2",
    "ff_context.proj_in": "ff_context.net.0.proj",
    "ff_context.proj_out": "ff_context.net.2",
    "attn.to_qkv": "attn.to_q | to_k | to_v",
    "attn.add_qkv": "attn.add_q_proj | add_k_proj | add_v_proj",
}
_SPLIT = {"attn.to_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
          "attn.add_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}  # fmt: skip


def diffusers_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our MM-DiT's state dict renamed (and Q/K/V split) for diffusers' SD3Transformer2DModel."""
    out = {}
    for name, value in state.items():
        for ours, theirs in _SPLIT.items():
            if f".{ours}." in name:
                for part, chunk in zip(theirs, value.chunk(3, dim=0)):
                    out[name.replace(ours, part)] = chunk
                break
        else:
            for ours, theirs in DIFFUSERS_NAMES.items():
                if ours not in _SPLIT and (f".{ours}." in name or name.startswith(f"{ours}.")):
                    name = name.replace(ours, theirs)
                    break
            out[name] = value
    return out


def to_diffusers(model: MMDiT):
    """A diffusers `SD3Transformer2DModel` with the same configuration and weights as `model` (eval mode)."""
    from diffusers import SD3Transformer2DModel

    c = model.config
    if c.timestep_dim != 256:
        raise ValueError(f"diffusers' SD3 embeds timesteps with 256 sinusoids; got timestep_dim={c.timestep_dim}")
    reference = SD3Transformer2DModel(
        sample_size=c.sample_size,
        patch_size=c.patch_size,
        in_channels=c.in_channels,
        num_layers=c.depth,
        attention_head_dim=c.width // c.num_heads,
        num_attention_heads=c.num_heads,
        joint_attention_dim=c.context_dim,
        caption_projection_dim=c.width,
        pooled_projection_dim=c.pooled_dim,
        out_channels=c.in_channels,
        pos_embed_max_size=c.sample_size // c.patch_size,  # the crop is then the whole grid, as ours
    )
    if c.mlp_mult != 4:
        raise ValueError(f"diffusers' SD3 blocks have an MLP 4x wide; got mlp_mult={c.mlp_mult}")
    state = diffusers_state_dict(model.state_dict())
    state["pos_embed.pos_embed"] = model.pos_embed.pos_embed.clone()  # persistent there, a fixed buffer here
    reference.load_state_dict(state, strict=True)
    return reference.to(next(model.parameters()).device).eval()
