"""Neural-network building blocks shared by the UNet, the VAE and the text encoder.

- `embeddings`: sinusoidal timestep embedding (`timestep_embedding`, `TimestepEmbedding`).
- `attention`: scaled dot-product attention, `SelfAttention`, `CrossAttention`.
- `blocks`: `ResBlock`, `TransformerBlock`, `SpatialTransformer`, `Downsample`, `Upsample`.
"""

from sdedu.nn.attention import CrossAttention, SelfAttention, scaled_dot_product_attention
from sdedu.nn.blocks import Downsample, FeedForward, ResBlock, SpatialTransformer, TransformerBlock, Upsample
from sdedu.nn.embeddings import TimestepEmbedding, timestep_embedding

__all__ = [
    "CrossAttention",
    "SelfAttention",
    "scaled_dot_product_attention",
    "Downsample",
    "FeedForward",
    "ResBlock",
    "SpatialTransformer",
    "TransformerBlock",
    "Upsample",
    "TimestepEmbedding",
    "timestep_embedding",
]
