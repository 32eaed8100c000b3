"""The networks: the UNet, the VAE, the text encoder, a small MLP denoiser for 2-D data, and the
baselines diffusion is compared with (a GAN and a toy VAE on 2-D data).

Submodules are imported on use (`from sdedu.models.mlp import MLPDenoiser`), so that
`import sdedu.models` stays light. Models know nothing about beta or alpha_bar.
"""
