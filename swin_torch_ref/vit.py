"""Vision Transformer in plain PyTorch, state_dict keys and shapes equal to timm's.

Covers the options of `VitConfig` behind today's checkpoints: register tokens, DeiT III's
position embedding on the patches only, CLIP's pre-norm and QuickGELU, LayerScale, qk-norm,
SigLIP's attention pooling, inputs of any size, DeiT's distillation token. The tokens are
[class, distillation, registers..., patches], as in timm. Input is NCHW. No jax here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from swin_jax.configs import IntPair, VitConfig
from swin_torch_ref.swin import DropPath


class QuickGELU(nn.Module):
    """OpenAI CLIP's GELU approximation, x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def activation(name: str) -> nn.Module:
    """The MLP activation named as timm names it (configs.ACTIVATIONS)."""
    if name == "quick_gelu":
        return QuickGELU()
    return nn.GELU(approximate="tanh" if name == "gelu_tanh" else "none")


def layer_norm(cfg: VitConfig, dim: int) -> nn.LayerNorm:
    # every norm of the model shares one eps in timm (its norm_layer), qk-norm and pooling included
    return nn.LayerNorm(dim, eps=cfg.layer_norm_eps)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = activation(act)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, drop: nn.Module) -> torch.Tensor:
    """softmax(q k^T * scale) v over (B, heads, N, head_dim); q is scaled before the product, as timm."""
    return drop(((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)) @ v


class Attention(nn.Module):
    def __init__(self, cfg: VitConfig):
        super().__init__()
        d = cfg.embed_dim
        self.num_heads = cfg.num_heads
        self.scale = (d // cfg.num_heads) ** -0.5
        self.qkv = nn.Linear(d, 3 * d, bias=cfg.qkv_bias)
        # qk-norm: a LayerNorm over each head's channels, before the scaling
        self.q_norm = layer_norm(cfg, d // cfg.num_heads) if cfg.qk_norm else nn.Identity()
        self.k_norm = layer_norm(cfg, d // cfg.num_heads) if cfg.qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(cfg.attn_drop_rate)
        self.proj = nn.Linear(d, d)
        self.proj_drop = nn.Dropout(cfg.proj_drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        x = attend(self.q_norm(q), self.k_norm(k), v, self.scale, self.attn_drop)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class LayerScale(nn.Module):
    """Learned per-channel scale of a residual branch (CaiT, DeiT III, DINOv2)."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, cfg: VitConfig, drop_path: float):
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = layer_norm(cfg, d)
        self.attn = Attention(cfg)
        # timm tests init_values for truth: 0.0 means no LayerScale there too
        self.ls1 = LayerScale(d, cfg.init_values) if cfg.init_values else nn.Identity()
        self.norm2 = layer_norm(cfg, d)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio), cfg.act_layer, cfg.proj_drop_rate)
        self.ls2 = LayerScale(d, cfg.init_values) if cfg.init_values else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VitConfig):
        super().__init__()
        self.config = cfg
        # with pre_norm a LayerNorm follows at once, so the projection has no bias (CLIP, timm)
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size, bias=not cfg.pre_norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, IntPair]:
        """(B, C, H, W) -> tokens (B, N, D), patches row-major, and the patch grid (H/p, W/p)."""
        cfg, size = self.config, tuple(x.shape[-2:])
        if not cfg.dynamic_img_size and size != cfg.img_size:
            raise ValueError(f"built for {cfg.img_size[0]}x{cfg.img_size[1]} images, got {size[0]}x{size[1]} "
                             "(dynamic_img_size=True takes any size the patch divides)")
        if any(s % cfg.patch_size for s in size):
            raise ValueError(f"input size {size[0]}x{size[1]} is not a multiple of the patch size {cfg.patch_size}")
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


def resample_pos_embed(pos_embed: torch.Tensor, old_grid: IntPair, new_grid: IntPair,
                       num_prefix: int) -> torch.Tensor:
    """The grid part of `pos_embed` (1, num_prefix + h*w, D) resized to `new_grid` as timm does
    (bicubic, antialiased, in fp32); the first `num_prefix` entries are kept as they are."""
    if new_grid == old_grid:
        return pos_embed  # timm returns it untouched (a same-size bicubic pass is not exact)
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    grid = grid.float().reshape(1, *old_grid, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False, antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, pos_embed.shape[-1]).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


class AttentionPoolLatent(nn.Module):
    """SigLIP's pooling ('map', timm's `AttentionPoolLatent`): one learned latent query attends
    over the patch tokens, then a residual MLP refines the result."""

    def __init__(self, cfg: VitConfig):
        super().__init__()
        d = cfg.embed_dim
        self.num_heads = cfg.num_heads
        self.scale = (d // cfg.num_heads) ** -0.5
        self.latent = nn.Parameter(torch.randn(1, 1, d) * d**-0.5)
        # timm builds the pool with its own defaults: q and kv always have a bias, and no qk-norm
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)
        self.norm = layer_norm(cfg, d)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio), cfg.act_layer, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) patch tokens -> (B, D)."""
        b, n, c = x.shape
        q = self.q(self.latent.expand(b, -1, -1)).reshape(b, 1, self.num_heads, -1).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        x = self.proj(attend(q, k, v, self.scale, nn.Identity()).transpose(1, 2).reshape(b, 1, c))
        x = x + self.mlp(self.norm(x))
        return x[:, 0]


class VisionTransformer(nn.Module):
    """ViT with timm's state_dict layout (and, with `dist_token`, that of timm's
    `VisionTransformerDistilled`); `forward` takes NCHW images and returns logits."""

    def __init__(self, cfg: VitConfig):
        super().__init__()
        self.config = cfg
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.dist_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, d)) if cfg.reg_tokens else None
        # covers the prefix tokens too unless no_embed_class (cfg.pos_embed_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.pos_embed_len, d) * 0.02)
        self.norm_pre = layer_norm(cfg, d) if cfg.pre_norm else nn.Identity()
        self.blocks = nn.Sequential(*[Block(cfg, rate) for rate in cfg.drop_path_rates()])
        self.norm = nn.Identity() if cfg.use_fc_norm else layer_norm(cfg, d)
        self.attn_pool = AttentionPoolLatent(cfg) if cfg.global_pool == "map" else None
        self.fc_norm = layer_norm(cfg, d) if cfg.use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(d, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        if cfg.dist_token:
            self.head_dist = nn.Linear(d, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _pos_embed(self, x: torch.Tensor, grid: IntPair) -> torch.Tensor:
        """Patch tokens (B, N, D) -> all tokens with the position embedding added."""
        cfg = self.config
        pos_embed = resample_pos_embed(self.pos_embed, cfg.patch_grid, grid, cfg.pos_embed_prefix_tokens)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.dist_token, self.reg_token)
                  if t is not None]
        if cfg.no_embed_class:  # the embedding covers the patches only: add, then join the prefix
            return torch.cat(prefix + [x + pos_embed], dim=1)
        return torch.cat(prefix + [x], dim=1) + pos_embed

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output tokens (B, num_prefix_tokens + N, D), before the final norm."""
        x = self.norm_pre(self._pos_embed(*self.patch_embed(x)))
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final-normed tokens (B, num_prefix_tokens + N, D)."""
        return self.norm(self.forward_intermediates(x)[-1])

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens -> logits (pooled features with num_classes=0)."""
        cfg = self.config
        if cfg.dist_token:
            # DeiT: the class and distillation tokens have a head each, averaged at inference;
            # timm's VisionTransformerDistilled reads them without fc_norm
            x, x_dist = self.head_drop(x[:, 0]), self.head_drop(x[:, 1])
            return (self.head(x) + self.head_dist(x_dist)) / 2
        if self.attn_pool is not None:
            x = self.attn_pool(x[:, cfg.num_prefix_tokens:])
        elif cfg.global_pool == "token":
            x = x[:, 0]
        else:
            x = x[:, cfg.num_prefix_tokens:].mean(dim=1)
        return self.head(self.head_drop(self.fc_norm(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
