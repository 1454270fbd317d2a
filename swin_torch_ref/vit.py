"""Vision Transformer in plain PyTorch, state_dict keys and shapes equal to timm's.

Input is NCHW. The class token is concatenated first, then `pos_embed` is added (timm and the
original JAX code). No jax here.
"""
from __future__ import annotations

import torch
from torch import nn

from swin_jax.configs import VitConfig
from swin_torch_ref.swin import DropPath, Mlp


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)))


class Block(nn.Module):
    def __init__(self, cfg: VitConfig, drop_path: float):
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.attn = Attention(d, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.proj_drop_rate)
        self.norm2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio), cfg.proj_drop_rate)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VitConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D), patches row-major


class VisionTransformer(nn.Module):
    """ViT with timm's state_dict layout; `forward` takes NCHW images."""

    def __init__(self, cfg: VitConfig):
        super().__init__()
        self.config = cfg
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.class_token else None
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.num_tokens, d) * 0.02)
        self.blocks = nn.Sequential(*[Block(cfg, rate) for rate in cfg.drop_path_rates()])
        self.norm = nn.Identity() if cfg.use_fc_norm else nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.fc_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps) if cfg.use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(d, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output tokens (B, N(+1), D), before the final norm."""
        x = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.forward_intermediates(x)[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = x[:, 0] if self.config.global_pool == "token" else x[:, self.config.num_prefix_tokens:].mean(dim=1)
        return self.head(self.head_drop(self.fc_norm(x)))
