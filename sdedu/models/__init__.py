"""The networks: the UNet, the VAE, the text encoder and a small MLP for 2-D data.

Submodules are imported on use (`from sdedu.models.mlp import MLPDenoiser`), so that
`import sdedu.models` stays light. Models know nothing about beta or alpha_bar.
"""
