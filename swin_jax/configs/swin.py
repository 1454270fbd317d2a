"""Swin Transformer V1 and V2 configs (`SwinConfig`, `SwinV2Config`) and their named models
(`MODELS`: name -> (config class, arguments), timm's names and values).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from swin_jax.arguments import InputError
from swin_jax.configs.fields import IntPair, _check_remat, to_pair
from swin_jax.configs.kernel_setting import Kernels, to_kernels


@dataclass(frozen=True)
class SwinConfig:
    """Swin Transformer V1 hyper-parameters (timm's `SwinTransformer` arguments).

    `img_size` is fixed at build time, as in timm with `strict_img_size=True`: it decides each
    block's window, shift and attention mask. `num_classes=0` gives pooled features.
    """

    img_size: IntPair = (224, 224)
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: IntPair = (7, 7)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    kernels: Kernels = Kernels()
    remat: str = "none"  # REMAT_CHOICES

    family = "swin"
    layer_norm_eps = 1e-5
    head_key = "head.fc.weight"  # canonical (timm) key of the classifier weight
    intermediates = "layers"  # the timm submodules whose outputs forward_intermediates returns

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", to_pair(self.img_size))
        object.__setattr__(self, "window_size", to_pair(self.window_size))
        object.__setattr__(self, "kernels", to_kernels(self.kernels))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        _check_remat(self.remat)
        if len(self.depths) != len(self.num_heads):
            raise InputError(f"depths {self.depths} and num_heads {self.num_heads} differ in length")
        for i, heads in enumerate(self.num_heads):
            if self.stage_dims[i] % heads:
                raise InputError(f"stage {i} width {self.stage_dims[i]} is not divisible by {heads} heads")
        grid = self.patch_grid
        if min(grid) < 1:
            raise InputError(f"img_size {self.img_size} is smaller than one {self.patch_size}px patch")

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    @property
    def num_features(self) -> int:
        return self.stage_dims[-1]

    @property
    def patch_grid(self) -> IntPair:
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    def stage_resolution(self, stage: int) -> IntPair:
        """Feature-map size inside `stage`: each patch merging pads odd sizes, so sizes round up."""
        h, w = self.patch_grid
        for _ in range(stage):
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w

    def block_window_shift(self, stage: int, block: int) -> tuple[IntPair, IntPair]:
        """Window and shift of one block, per axis, as timm computes them.

        Odd blocks shift by half a window. Where the feature map is no larger than the window
        along an axis, the window shrinks to the map and that axis is not shifted.
        """
        resolution = self.stage_resolution(stage)
        target_shift = (0, 0) if block % 2 == 0 else tuple(w // 2 for w in self.window_size)
        window = tuple(r if r <= w else w for r, w in zip(resolution, self.window_size))
        shift = tuple(0 if r <= w else s for r, w, s in zip(resolution, window, target_shift))
        return window, shift  # type: ignore[return-value]

    def drop_path_rates(self) -> list[list[float]]:
        """Stochastic-depth rate of every block, linear from 0 over all blocks, split per stage."""
        total = sum(self.depths)
        rates = [self.drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        out, start = [], 0
        for depth in self.depths:
            out.append(rates[start:start + depth])
            start += depth
        return out


@dataclass(frozen=True)
class SwinV2Config(SwinConfig):
    """Swin Transformer V2 hyper-parameters (timm's `SwinTransformerV2` arguments): V1's, plus
    `pretrained_window_sizes`, one per stage (an int or a pair; 0: none), the window each stage
    was pre-trained with. V2's position bias is an MLP on log-spaced relative coordinates; those
    are scaled by the pre-training window (by the model's own window where it is 0), so weights
    trained with one window keep their meaning at another."""

    pretrained_window_sizes: tuple[IntPair, ...] = ()  # () or an int: the same for every stage

    family = "swinv2"

    def __post_init__(self) -> None:
        super().__post_init__()
        sizes = self.pretrained_window_sizes
        if isinstance(sizes, int) or not sizes:
            sizes = (sizes or 0,) * self.num_stages
        if len(sizes) < self.num_stages:
            raise InputError(f"pretrained_window_sizes {self.pretrained_window_sizes} needs an entry for each of the "
                             f"{self.num_stages} stages")
        # entries past the last stage are unused, as in timm (a named model with fewer stages)
        object.__setattr__(self, "pretrained_window_sizes", tuple(to_pair(s) for s in sizes[:self.num_stages]))


def _swin(img: int, embed: int, depths: tuple[int, ...], heads: tuple[int, ...], window: int) -> dict[str, Any]:
    return dict(img_size=img, embed_dim=embed, depths=depths, num_heads=heads, window_size=window)


_SWIN_T = ((2, 2, 6, 2), (3, 6, 12, 24))
_SWIN_S = ((2, 2, 18, 2), (3, 6, 12, 24))
_SWIN_B = ((2, 2, 18, 2), (4, 8, 16, 32))
_SWIN_L = ((2, 2, 18, 2), (6, 12, 24, 48))

# name -> (config class, arguments). timm's names and values.
MODELS: dict[str, tuple[type, dict[str, Any]]] = {
    "swin_tiny_patch4_window7_224": (SwinConfig, _swin(224, 96, *_SWIN_T, 7)),
    "swin_small_patch4_window7_224": (SwinConfig, _swin(224, 96, *_SWIN_S, 7)),
    "swin_base_patch4_window7_224": (SwinConfig, _swin(224, 128, *_SWIN_B, 7)),
    "swin_base_patch4_window12_384": (SwinConfig, _swin(384, 128, *_SWIN_B, 12)),
    "swin_large_patch4_window7_224": (SwinConfig, _swin(224, 192, *_SWIN_L, 7)),
    "swin_large_patch4_window12_384": (SwinConfig, _swin(384, 192, *_SWIN_L, 12)),
}


def _swinv2(img: int, embed: int, depths: tuple[int, ...], heads: tuple[int, ...], window: int,
            pretrained_windows: tuple[int, ...] = (), **more: Any) -> tuple[type, dict[str, Any]]:
    return SwinV2Config, dict(_swin(img, embed, depths, heads, window), pretrained_window_sizes=pretrained_windows, **more)


_V2_FROM_12 = (12, 12, 12, 6)  # the 192px ImageNet-22k models' windows (the last stage is 6x6)
MODELS.update({
    "swinv2_tiny_window8_256": _swinv2(256, 96, *_SWIN_T, 8),
    "swinv2_tiny_window16_256": _swinv2(256, 96, *_SWIN_T, 16),
    "swinv2_small_window8_256": _swinv2(256, 96, *_SWIN_S, 8),
    "swinv2_small_window16_256": _swinv2(256, 96, *_SWIN_S, 16),
    "swinv2_base_window8_256": _swinv2(256, 128, *_SWIN_B, 8),
    "swinv2_base_window16_256": _swinv2(256, 128, *_SWIN_B, 16),
    # timm's default weights for these two are ImageNet-22k classifiers
    "swinv2_base_window12_192": _swinv2(192, 128, *_SWIN_B, 12, num_classes=21841),
    "swinv2_large_window12_192": _swinv2(192, 192, *_SWIN_L, 12, num_classes=21841),
    "swinv2_base_window12to16_192to256": _swinv2(256, 128, *_SWIN_B, 16, _V2_FROM_12),
    "swinv2_base_window12to24_192to384": _swinv2(384, 128, *_SWIN_B, 24, _V2_FROM_12),
    "swinv2_large_window12to16_192to256": _swinv2(256, 192, *_SWIN_L, 16, _V2_FROM_12),
    "swinv2_large_window12to24_192to384": _swinv2(384, 192, *_SWIN_L, 24, _V2_FROM_12),
})
