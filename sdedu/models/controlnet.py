"""ControlNet: a trainable copy of the UNet's encoder that steers a frozen UNet with an image (Zhang et al. 2023).

    residuals = ControlNetModel(z_t, t, cond, control_image)       control_image (B, 1, 32, 32) mask in [0, 1]
    eps_pred  = UNet(z_t, t, cond, down_residuals, mid_residual)    the frozen UNet, its skips and middle nudged

Zhang et al. (2023, section 3.1, eq. 2) lock the network F(x; Theta) and clone its encoder into a
trainable copy Theta_c; the copy reads the condition c and returns into the locked network through
"zero convolutions" Z (1x1 convolutions with weights and bias initialised to zero):

    y_c = F(x; Theta) + Z(F(x + Z(c; Theta_z1); Theta_c); Theta_z2)                  (eq. 2)

so at initialisation y_c = y: training starts from the unchanged model and cannot hurt it with
noisy gradients in its first steps. For Stable Diffusion (section 3.2) F's encoder is the UNet's
down path and middle; the copy's outputs are added to the UNet's skip connections and to its
middle block's output. Here, for our two-level UNet (`sdedu.models.unet`):

    c = condition(mask, outline)                 (B, c0, 8, 8)   a small conv net, its last conv zero
    h = conv_in(z_t) + c                         (B, c0, 8, 8)   the copy's input: x + Z(c)
    d0 = down 0 (ResBlock + SpatialTransformer)  (B, c0, 8, 8)   -> zero conv -> added to UNet's skip 0
    d1 = down 1 after Downsample                 (B, c1, 4, 4)   -> zero conv -> added to UNet's skip 1
    m  = mid                                     (B, c1, 4, 4)   -> zero conv -> added to UNet's middle output

The condition network follows section 3.2 ("a tiny network E of four convolution layers with 4x4
kernels and 2x2 strides" mapping 512x512 images to 64x64 latents) after diffusers'
`ControlNetConditioningEmbedding`: 3x3 convolutions with SiLU, a stride-2 one per halving (diffusers
puts a stride-1 one before each), the last one zero-initialised. Its input is the user's mask and the mask's outline (mask minus its
3x3 erosion), so the edge the shape must have is given as explicitly as where it is.

Why not diffusers' `ControlNetModel.from_unet`: diffusers builds its ControlNet from a
`UNet2DConditionModel`, whose down blocks return a residual for conv_in's output, for every resnet
and for every downsampler (here that would be 4: conv_in, down 0, its downsampler, down 1), and
whose middle block is ResNet + transformer + ResNet. Our UNet keeps 2 skips (the outputs of down 0
and down 1) and its middle is one ResBlock + one transformer, so diffusers' ControlNet for the
matching UNet2DConditionModel has residuals our UNet has no place for, and no weights to copy
into from ours. The structure is the same (copied encoder, zero convolutions, residuals into skips
and middle); the tests check the property that defines it: an untrained ControlNet leaves the
UNet's output bit-identical.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sdedu._checks import check_tensor, describe
from sdedu.models.unet import UNet, UNetConfig
from sdedu.nn.blocks import Downsample, ResBlock, SpatialTransformer
from sdedu.nn.embeddings import TimestepEmbedding

__all__ = ["ControlNetConfig", "ControlNetModel", "ControlledUNet", "outline"]


@dataclass
class ControlNetConfig:
    """Sizes of a ControlNet.

    unet: the config of the UNet it controls (the copy has the same encoder; a ControlNet fits no other UNet).
    image_size: side of the control image (32: the pipeline's images); a power-of-two multiple of
        unet.sample_size, reached by one stride-2 convolution per halving.
    conditioning_channels: channels the condition network reads (2: the mask and its outline).
    embedding_channels: the condition network's widths, one per resolution from image_size down to
        unet.sample_size (so len = halvings + 1).
    """

    unet: UNetConfig = field(default_factory=UNetConfig)
    image_size: int = 32
    conditioning_channels: int = 2
    embedding_channels: tuple = (16, 32, 64)

    def __post_init__(self):
        if isinstance(self.unet, dict):  # as read back from a manifest
            self.unet = UNetConfig(**self.unet)
        if not isinstance(self.unet, UNetConfig):
            raise TypeError(f"unet must be a UNetConfig; got {describe(self.unet)}")
        self.embedding_channels = tuple(int(c) for c in self.embedding_channels)
        ratio = self.image_size / self.unet.sample_size
        halvings = int(round(math.log2(ratio))) if ratio >= 1 else -1
        if halvings < 0 or 2**halvings != ratio:
            raise ValueError(
                f"image_size must be unet.sample_size ({self.unet.sample_size}) times a power of two; "
                f"got {self.image_size!r}"
            )
        if len(self.embedding_channels) != halvings + 1:
            raise ValueError(
                f"embedding_channels must give {halvings + 1} widths ({self.image_size} down to "
                f"{self.unet.sample_size}); got {self.embedding_channels!r}"
            )


def outline(mask: torch.Tensor) -> torch.Tensor:
    """The mask's outline: mask minus its 3x3 erosion (erosion = minus the max-pool of minus the mask). (B, 1, H, W)."""
    eroded = -F.max_pool2d(-mask, kernel_size=3, stride=1, padding=1)  # (B, 1, H, W)
    return mask - eroded


def zero_module(module: nn.Module) -> nn.Module:
    """Weights and biases set to zero: Zhang et al.'s "zero convolution" (section 3.1)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ControlNetModel(nn.Module):
    """The trainable encoder copy with its condition network and zero convolutions (module docstring).

    Build it from a UNet with `ControlNetModel.from_unet(unet)` (the copy starts as the UNet's encoder,
    as in the paper); `ControlNetModel(config)` alone starts from random encoder weights.
    """

    def __init__(self, config: ControlNetConfig | None = None):
        super().__init__()
        self.config = config = config or ControlNetConfig()
        u = config.unet
        c0, c1 = u.channels
        temb, g = 4 * c0, u.norm_groups
        # 1. The condition network: mask + outline (B, 2, 32, 32) -> (B, c0, 8, 8), its last conv zero.
        widths = config.embedding_channels
        layers = [nn.Conv2d(config.conditioning_channels, widths[0], 3, padding=1), nn.SiLU()]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.SiLU()]
        layers.append(zero_module(nn.Conv2d(widths[-1], c0, 3, padding=1)))
        self.condition = nn.Sequential(*layers)
        # 2. The copy of the UNet's encoder: the same names, so the UNet's weights load into it.
        self.time_embedding = TimestepEmbedding(c0, temb)
        self.conv_in = nn.Conv2d(u.in_channels, c0, 3, padding=1)

        def attn(ch):
            return SpatialTransformer(ch, u.context_dim, ch // u.head_dim, u.head_dim, u.ff_mult, norm_groups=g)

        self.down0_res, self.down0_attn = ResBlock(c0, c0, temb, norm_groups=g, zero_init=True), attn(c0)
        self.downsample = Downsample(c0)
        self.down1_res, self.down1_attn = ResBlock(c0, c1, temb, norm_groups=g, zero_init=True), attn(c1)
        self.mid_res, self.mid_attn = ResBlock(c1, c1, temb, norm_groups=g, zero_init=True), attn(c1)
        # 3. Zero convolutions back into the UNet: one per skip, one for the middle.
        self.zero_convs = nn.ModuleList([zero_module(nn.Conv2d(c, c, 1)) for c in (c0, c1)])
        self.zero_mid = zero_module(nn.Conv2d(c1, c1, 1))

    @classmethod
    def from_unet(cls, unet: UNet, **config) -> ControlNetModel:
        """A ControlNet whose encoder copy starts as `unet`'s (diffusers' `ControlNetModel.from_unet`)."""
        if not isinstance(getattr(unet, "config", None), UNetConfig):
            raise TypeError(f"unet must be a sdedu UNet (with a UNetConfig); got {describe(unet)}")
        model = cls(ControlNetConfig(unet=UNetConfig(**asdict(unet.config)), **config))
        own = model.state_dict()
        copied = {k: v for k, v in unet.state_dict().items() if k in own}
        model.load_state_dict(copied, strict=False)
        return model.to(next(unet.parameters()).device)

    def check_unet(self, unet, name: str = "controlnet") -> None:
        """Refuse a UNet of another config than the one this ControlNet was made for (the error names `name`)."""
        theirs = asdict(unet.config) if isinstance(getattr(unet, "config", None), UNetConfig) else None
        ours = asdict(self.config.unet)
        if theirs != ours:
            raise ValueError(
                f"{name} was made for a UNet with config {ours}; this pipeline's UNet has {theirs}. "
                "Train a ControlNet for this model (python -m sdedu.train controlnet)."
            )

    def forward(self, x_t, t, cond, control_image) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The residuals for the UNet's two skips and its middle.

        Args:
            x_t: (B, 4, 8, 8) noisy latents; t: (B,) int64; cond: (B, L, D), as the UNet's.
            control_image: (B, 1, 32, 32) the mask, in [0, 1].
        Returns:
            ([r0 (B, c0, 8, 8), r1 (B, c1, 4, 4)], r_mid (B, c1, 4, 4)).
        """
        check_tensor("control_image", control_image, ndim=4, floating=True)
        # 1. The condition: mask and outline -> features at the latent's resolution (Z(c; Theta_z1)).
        c = self.condition(torch.cat([control_image, outline(control_image)], dim=1))  # (B, c0, 8, 8)
        # 2. The encoder copy on x + Z(c), as the UNet's down path and middle (eq. 2's F(.; Theta_c)).
        temb = self.time_embedding(t)  # (B, 4 * c0)
        h = self.conv_in(x_t) + c  # (B, c0, 8, 8)
        d0 = self.down0_attn(self.down0_res(h, temb), cond)  # (B, c0, 8, 8)
        d1 = self.down1_attn(self.down1_res(self.downsample(d0), temb), cond)  # (B, c1, 4, 4)
        m = self.mid_attn(self.mid_res(d1, temb), cond)  # (B, c1, 4, 4)
        # 3. Zero convolutions (eq. 2's Z(.; Theta_z2)).
        return [self.zero_convs[0](d0), self.zero_convs[1](d1)], self.zero_mid(m)


class ControlledUNet(nn.Module):
    """unet(x_t, t, cond) with a ControlNet's residuals: what the one denoising loop and the recipe's loss call.

    Args:
        unet: the (frozen) UNet.
        controlnet: a `ControlNetModel` made for it.
        control_image: (B, 1, 32, 32) masks; a call with a batch of k * B (classifier-free guidance
            stacks [uncond, cond]) gives every block of B the same masks, as diffusers does.
        conditioning_scale: multiplies the residuals (diffusers' `controlnet_conditioning_scale`).
    """

    def __init__(self, unet, controlnet: ControlNetModel, control_image: torch.Tensor, conditioning_scale=1.0):
        super().__init__()
        self.unet, self.controlnet = unet, controlnet
        self.control_image, self.conditioning_scale = control_image, float(conditioning_scale)
        self.config = unet.config

    def forward(self, x_t, t, cond):
        B = self.control_image.shape[0]
        if x_t.shape[0] % B:
            raise ValueError(f"x_t must hold a multiple of the {B} control images; got {describe(x_t)}")
        control = self.control_image.repeat(x_t.shape[0] // B, 1, 1, 1)  # (k B, 1, 32, 32)
        down, mid = self.controlnet(x_t, t, cond, control)
        s = self.conditioning_scale
        return self.unet(x_t, t, cond, down_residuals=[s * r for r in down], mid_residual=s * mid)
