"""Swin Transformer V2 in plain PyTorch, written from the paper and checked against timm's model.

The state_dict keys and shapes equal timm's `SwinTransformerV2` for the same config (timm saves
no buffers either), so a timm model loads ours strictly and back. Input is NCHW. No jax here.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from swin_jax.configs import IntPair, SwinV2Config
from swin_torch_ref.swin import SwinBlock, SwinStage, SwinTransformer, relative_position_index


def relative_coords_table(window_size: IntPair, pretrained_window_size: IntPair) -> torch.Tensor:
    """((2wh-1) * (2ww-1), 2) coordinates (dh, dw) of every relative position, each axis divided by
    the pre-training window - 1 (the window's own when none is set), spread to [-8, 8] and
    log-spaced: sign(t) * log2(1 + |t|) / 3."""
    (wh, ww), (ph, pw) = window_size, pretrained_window_size
    base = (ph, pw) if ph > 0 else (wh, ww)
    dh = torch.arange(-(wh - 1), wh, dtype=torch.float32) / max(base[0] - 1, 1)
    dw = torch.arange(-(ww - 1), ww, dtype=torch.float32) / max(base[1] - 1, 1)
    table = torch.stack(torch.meshgrid(dh, dw, indexing="ij"), dim=-1).reshape(-1, 2) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


class CosineWindowAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: IntPair, pretrained_window_size: IntPair,
                 qkv_bias: bool, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(), nn.Linear(512, num_heads, bias=False))
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_buffer("relative_coords_table", relative_coords_table(window_size, pretrained_window_size),
                             persistent=False)
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        bw, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.reshape(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        table = self.cpb_mlp(self.relative_coords_table)  # (entries, heads)
        position_bias = table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = attn + 16 * torch.sigmoid(position_bias).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(-1, nw, self.num_heads, n, n) + mask[None, :, None]).view(-1, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(x))


class SwinV2Block(SwinBlock):
    """V1's block (windows, shift, mask) with cosine attention and residual post-norm:
    x + norm1(attention(x)), x + norm2(mlp(x))."""

    def __init__(self, cfg: SwinV2Config, stage: int, block: int, drop_path: float):
        super().__init__(cfg, stage, block, drop_path)
        # timm's V2 registers attn before norm1 and mlp before norm2: its state_dict order
        self._modules = {k: self._modules[k] for k in ("attn", "norm1", "drop_path", "mlp", "norm2")}

    def make_attention(self, cfg: SwinV2Config, stage: int) -> nn.Module:
        return CosineWindowAttention(cfg.stage_dims[stage], cfg.num_heads[stage], self.window_size,
                                     cfg.pretrained_window_sizes[stage], cfg.qkv_bias, cfg.attn_drop_rate,
                                     cfg.proj_drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.norm1(self._attention(x)))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class PatchMergingV2(nn.Module):
    """Gather 2x2 neighbours (x00, x10, x01, x11), reduce 4C -> out, then normalise."""

    def __init__(self, dim: int, out_dim: int, eps: float):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        return self.norm(self.reduction(torch.cat(parts, dim=-1)))


class SwinV2Stage(SwinStage):
    merging = PatchMergingV2
    block = SwinV2Block


class SwinTransformerV2(SwinTransformer):
    """Swin V2 with timm's state_dict layout: V1's model with V2's stages; NCHW input."""

    stage_class = SwinV2Stage

    def __init__(self, cfg: SwinV2Config):
        super().__init__(cfg)
        for stage in self.layers:  # post-norms start at zero, as timm's: each block begins as the identity
            for block in stage.blocks:
                for norm in (block.norm1, block.norm2):
                    nn.init.zeros_(norm.weight)
