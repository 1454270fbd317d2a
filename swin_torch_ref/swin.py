"""Swin Transformer V1 in plain PyTorch, written from the paper and checked against timm's model.

The state_dict keys and shapes equal timm's for the same config, so a timm model loads ours
strictly and back. Input is NCHW, as in timm. No jax here.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from swin_jax.configs import IntPair, SwinConfig


def window_partition(x: torch.Tensor, window_size: IntPair) -> torch.Tensor:
    """(B, H, W, C) -> (B * num_windows, wh, ww, C), windows row-major, batch outermost."""
    b, h, w, c = x.shape
    wh, ww = window_size
    x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh, ww, c)


def window_reverse(windows: torch.Tensor, window_size: IntPair, height: int, width: int) -> torch.Tensor:
    """(B * num_windows, wh, ww, C) -> (B, height, width, C)."""
    wh, ww = window_size
    c = windows.shape[-1]
    x = windows.view(-1, height // wh, width // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def relative_position_index(window_size: IntPair) -> torch.Tensor:
    """idx[i, j] = (h_i - h_j + wh - 1) * (2 ww - 1) + (w_i - w_j + ww - 1), tokens row-major."""
    wh, ww = window_size
    hh, www = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    h, w = hh.flatten(), www.flatten()
    dh = h[:, None] - h[None, :] + wh - 1
    dw = w[:, None] - w[None, :] + ww - 1
    return dh * (2 * ww - 1) + dw


def shifted_window_mask(padded_size: IntPair, window_size: IntPair, shift_size: IntPair) -> torch.Tensor:
    """(num_windows, N, N): -100 where two tokens of a window come from different regions."""
    hp, wp = padded_size
    (wh, ww), (sh, sw) = window_size, shift_size
    regions = torch.zeros(1, hp, wp, 1)
    label = 0
    for hs in (slice(0, -wh), slice(-wh, -sh), slice(-sh, None)):
        for ws in (slice(0, -ww), slice(-ww, -sw), slice(-sw, None)):
            regions[:, hs, ws, :] = label
            label += 1
    windows = window_partition(regions, window_size).reshape(-1, wh * ww)
    different = windows.unsqueeze(1) != windows.unsqueeze(2)
    return torch.where(different, -100.0, 0.0)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: IntPair, qkv_bias: bool, attn_drop: float, proj_drop: float):
        super().__init__()
        wh, ww = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(-1, nw, self.num_heads, n, n) + mask[None, :, None]).view(-1, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class SwinBlock(nn.Module):
    def __init__(self, cfg: SwinConfig, stage: int, block: int, drop_path: float):
        super().__init__()
        dim = cfg.stage_dims[stage]
        self.window_size, self.shift_size = cfg.block_window_shift(stage, block)
        self.norm1 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.attn = self.make_attention(cfg, stage)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.proj_drop_rate)
        mask = None
        if any(self.shift_size):
            h, w = cfg.stage_resolution(stage)
            (wh, ww) = self.window_size
            padded = (-(-h // wh) * wh, -(-w // ww) * ww)
            mask = shifted_window_mask(padded, self.window_size, self.shift_size)
        self.register_buffer("attn_mask", mask, persistent=False)

    def make_attention(self, cfg: SwinConfig, stage: int) -> nn.Module:
        return WindowAttention(cfg.stage_dims[stage], cfg.num_heads[stage], self.window_size, cfg.qkv_bias,
                               cfg.attn_drop_rate, cfg.proj_drop_rate)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, c = x.shape
        (wh, ww), (sh, sw) = self.window_size, self.shift_size
        if sh or sw:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        x = F.pad(x, (0, 0, 0, (ww - w % ww) % ww, 0, (wh - h % wh) % wh))  # after the roll, as timm
        hp, wp = x.shape[1:3]
        windows = window_partition(x, self.window_size).reshape(-1, wh * ww, c)
        windows = self.attn(windows, self.attn_mask)
        x = window_reverse(windows.view(-1, wh, ww, c), self.window_size, hp, wp)[:, :h, :w]
        if sh or sw:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self._attention(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, out_dim: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))


class SwinStage(nn.Module):
    merging: type[nn.Module] = PatchMerging  # Swin V2's stage changes both
    block: type[nn.Module] = SwinBlock

    def __init__(self, cfg: SwinConfig, stage: int):
        super().__init__()
        dims = cfg.stage_dims
        self.downsample = self.merging(dims[stage - 1], dims[stage], cfg.layer_norm_eps) if stage > 0 else nn.Identity()
        rates = cfg.drop_path_rates()[stage]
        self.blocks = nn.Sequential(*[self.block(cfg, stage, j, rates[j]) for j in range(cfg.depths[stage])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ClassifierHead(nn.Module):
    def __init__(self, in_features: int, num_classes: int, drop_rate: float):
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x.mean(dim=(1, 2))))


class SwinTransformer(nn.Module):
    """Swin V1 with timm's state_dict layout; `forward` takes NCHW images."""

    stage_class: type[nn.Module] = SwinStage  # Swin V2 builds its own stages

    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.config = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.layers = nn.Sequential(*[self.stage_class(cfg, i) for i in range(cfg.num_stages)])
        self.norm = nn.LayerNorm(cfg.num_features, eps=cfg.layer_norm_eps)
        self.head = ClassifierHead(cfg.num_features, cfg.num_classes, cfg.drop_rate)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage outputs, NHWC (before the final norm)."""
        x = self.patch_embed(x)
        outputs = []
        for stage in self.layers:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final normalised feature map, NHWC."""
        return self.norm(self.forward_intermediates(x)[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
