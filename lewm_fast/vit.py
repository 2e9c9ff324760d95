"""The LeWM image encoder: a ViT with the numerics of Hugging Face's `ViTModel` (transformers 5.x).

Parameter names equal transformers 5.x `ViTModel` names (without pooler), so a public state_dict
loads as it is (4.x names are mapped in `lewm_fast.interop.names`). The output is the CLS token of
the last hidden state after the final LayerNorm. Position embeddings are bicubically interpolated
when the image grid differs from the one they were trained at, exactly as `interpolate_pos_encoding`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbeddings(nn.Module):
    def __init__(self, in_channels: int, width: int, patch_size: int):
        super().__init__()
        self.projection = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (N, C, H, W) -> patch tokens (N, H/p * W/p, width)."""
        return self.projection(pixels).flatten(2).transpose(1, 2)


class Embeddings(nn.Module):
    def __init__(self, in_channels: int, width: int, patch_size: int, image_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.patch_embeddings = PatchEmbeddings(in_channels, width, patch_size)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.position_embeddings, std=0.02)

    def position_table(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings (1, 1 + h*w, width) for an image of height x width pixels."""
        new_h, new_w = height // self.patch_size, width // self.patch_size
        if new_h * new_w == self.grid * self.grid and height == width:
            return self.position_embeddings
        cls_pos, patch_pos = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(new_h, new_w), mode="bicubic", align_corners=False)
        return torch.cat((cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (N, C, H, W) -> tokens (N, 1 + H/p * W/p, width), CLS first."""
        tokens = self.patch_embeddings(pixels)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        return tokens + self.position_table(pixels.shape[-2], pixels.shape[-1])


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.o_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, L, width) -> (N, L, width), bidirectional."""
        n, length, _ = x.shape
        q, k, v = (
            p(x).view(n, length, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.o_proj(out.transpose(1, 2).reshape(n, length, -1))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Layer(nn.Module):
    """Pre-norm ViT layer: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, mlp_dim: int, eps: float):
        super().__init__()
        self.attention = SelfAttention(width, heads)
        self.layernorm_before = nn.LayerNorm(width, eps=eps)
        self.layernorm_after = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.mlp(self.layernorm_after(x))


class ViTEncoder(nn.Module):
    """ViT encoder returning the CLS token of the final-LayerNorm'd last hidden state.

    Args:
        image_size: the size the position embeddings are trained at (other sizes interpolate).
        patch_size, in_channels, width, depth, heads, mlp_dim, eps: the ViT's sizes.
    """

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 14,
        in_channels: int = 3,
        width: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_dim: int = 768,
        eps: float = 1e-12,
    ):
        super().__init__()
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.embeddings = Embeddings(in_channels, width, patch_size, image_size)
        self.layers = nn.ModuleList(Layer(width, heads, mlp_dim, eps) for _ in range(depth))
        self.layernorm = nn.LayerNorm(width, eps=eps)
        self._init_linear()

    def _init_linear(self) -> None:
        # Hugging Face ViT's initialisation (initializer_range 0.02), so training starts alike.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (N, C, H, W) float -> CLS embedding (N, width)."""
        x = self.embeddings(pixels)
        for layer in self.layers:
            x = layer(x)
        # Only the CLS row is used: normalising one row equals normalising all rows then slicing.
        return self.layernorm(x[:, 0])
