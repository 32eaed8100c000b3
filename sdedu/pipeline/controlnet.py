"""ControlNet for the pipeline: load one, check it fits the model, and steer the one denoising loop with it.

    from sdedu import ControlNet, TinyStableDiffusion
    pipe, cn = TinyStableDiffusion.from_pretrained(), ControlNet.from_pretrained()
    images = pipe(["a red shape"] * 4, control_image=masks, controlnet=cn)     masks (4, 1, 32, 32) in [0, 1]

The network is `sdedu.models.controlnet.ControlNetModel` (diffusers' name); `ControlNet` holds one with
the manifest it came with, as `TinyStableDiffusion` holds its parts. The pipeline runs the same loop
(`sdedu.pipeline.loop.denoise`) with `ControlledUNet` in place of the UNet: at every step the
ControlNet reads the mask and adds its residuals to the UNet's skips and middle (Zhang et al. 2023).
"""

from __future__ import annotations

from pathlib import Path

import torch

from sdedu._checks import check_device, check_number_range, describe
from sdedu.models.controlnet import ControlledUNet, ControlNetModel
from sdedu.pipeline.checks import check_images

SHIPPED_CONTROLNET = "controlnet"  # the shipped ControlNet's folder inside the shipped weights


class ControlNet:
    """A ControlNet (`ControlNetModel`) and its manifest: what `pipe(..., controlnet=)` takes.

    Args:
        model: a `ControlNetModel`.
        manifest: the weights manifest it was loaded with ({} for one built in Python); its
            base.unet.sha256 names the UNet it was trained for.
    """

    def __init__(self, model: ControlNetModel, manifest: dict | None = None):
        if not isinstance(model, ControlNetModel):
            raise TypeError(f"model must be a sdedu.models.controlnet.ControlNetModel; got {describe(model)}")
        self.model = model.eval()
        self.config = model.config
        self.manifest = manifest or {}

    @classmethod
    def from_pretrained(cls, path=None, device="cpu") -> ControlNet:
        """The shipped ControlNet (path=None) or the one in the folder `path`, hash-checked; nothing is downloaded."""
        from sdedu.weights import SHIPPED, load_component, read_manifest

        device = check_device("device", device)
        directory = Path(path) if path is not None else SHIPPED / SHIPPED_CONTROLNET
        return cls(load_component("controlnet", directory, device), read_manifest(directory))

    @classmethod
    def from_unet(cls, unet, **config) -> ControlNet:
        """An untrained ControlNet for `unet` (its encoder copied, zero convolutions at zero): changes nothing yet."""
        return cls(ControlNetModel.from_unet(unet, **config))

    def to(self, device) -> ControlNet:
        """Move the network to `device`; returns self."""
        self.model = self.model.to(check_device("device", device))
        return self

    def check_fits(self, pipe) -> None:
        """Refuse a pipeline whose UNet is not the one this ControlNet was made for: another config, or
        (when both manifests say) another trained UNet."""
        self.model.check_unet(pipe.unet, "controlnet")
        ours = self.manifest.get("base", {}).get("unet", {}).get("sha256")
        theirs = pipe.manifest.get("components", {}).get("unet", {}).get("sha256")
        if ours and theirs and ours != theirs:
            raise ValueError(
                f"controlnet was trained for the UNet with sha256 {ours}; this pipeline's UNet has sha256 {theirs}"
            )

    def __repr__(self) -> str:
        count = sum(p.numel() for p in self.model.parameters())
        return f"ControlNet({count:,} params, control image (B, 1, {self.config.image_size}, {self.config.image_size}))"


def controlled_unet(pipe, control_image, controlnet, batch: int, num_images_per_prompt: int, conditioning_scale):
    """The model the pipeline's loop calls: `pipe.unet`, or `ControlledUNet` when a ControlNet is given.

    Args:
        control_image: None, or masks (n, 1, 32, 32) in [0, 1] with n = 1, `batch` prompts (each
            repeated num_images_per_prompt times) or batch * num_images_per_prompt images.
        controlnet: None or a `ControlNet` made for pipe's UNet; both or neither must be given.
    """
    if control_image is None and controlnet is None:
        return pipe.unet
    if controlnet is None:
        raise ValueError("control_image was given without controlnet: pass controlnet=ControlNet.from_pretrained()")
    if not isinstance(controlnet, ControlNet):
        raise TypeError(
            f"controlnet must be a sdedu ControlNet (ControlNet.from_pretrained()); got {describe(controlnet)}"
        )
    if control_image is None:
        raise ValueError("controlnet was given without control_image: pass masks (B, 1, 32, 32) in [0, 1]")
    controlnet.check_fits(pipe)
    scale = check_number_range("controlnet_conditioning_scale", conditioning_scale, 0.0)
    masks = check_images("control_image", control_image, 1, controlnet.config.image_size)  # (n, 1, 32, 32)
    total = batch * num_images_per_prompt
    if masks.shape[0] == batch:
        masks = masks.repeat_interleave(num_images_per_prompt, dim=0)  # prompt-major, as the prompts
    elif masks.shape[0] == 1:
        masks = masks.expand(total, -1, -1, -1)
    if masks.shape[0] != total:
        raise ValueError(
            f"control_image must hold 1, {batch} (one per prompt) or {total} (one per image) masks; got {describe(control_image)}"
        )
    model = controlnet.to(pipe.device).model
    return ControlledUNet(pipe.unet, model, masks.to(pipe.device, torch.float32), scale)
