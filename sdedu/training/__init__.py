"""Training: the shared loop (EMA, clipping, bf16, CSV log, resumable safetensors checkpoints),
and the recipe that trains the tiny Stable Diffusion (`recipes`). `toy` trains the 2-D denoiser.

Submodules are imported on use: `from sdedu.training.recipes import train_all`.
"""
