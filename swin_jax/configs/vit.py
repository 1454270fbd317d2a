"""Vision Transformer config (`VitConfig`) and the named models of the ViT family (`MODELS`: name ->
(config class, arguments)): ViT, DeiT, DeiT III, DINOv2, CLIP and SigLIP image towers, with timm's
names and arguments.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from swin_jax.arguments import InputError
from swin_jax.configs.fields import ACTIVATIONS, IntPair, _check_remat, to_pair
from swin_jax.configs.kernel_setting import Kernels, to_kernels


@dataclass(frozen=True)
class VitConfig:
    """Vision Transformer hyper-parameters (timm's `VisionTransformer` arguments).

    `global_pool` is 'token' (class token), 'avg' (mean of the patch tokens) or 'map' (attention
    pooling with a learned latent query, then an MLP: SigLIP). `fc_norm=None` follows timm: the
    final norm moves after the pooling for 'avg' (timm), stays on the tokens for 'token' and
    'map'; `fc_norm=False` with 'avg' normalises the tokens first (Google's ViT).

    The options behind today's checkpoints, as timm names them:
    - `reg_tokens`: learned register tokens after the class token, dropped at pooling (DINOv2 reg4).
    - `no_embed_class`: the position embedding covers the patches only and is added before the
      prefix tokens are joined (DeiT III, DINOv2 with registers).
    - `pre_norm`: a LayerNorm (`norm_pre`) before the blocks; the patch embedding has no bias (CLIP).
    - `init_values`: LayerScale (`ls1.gamma`, `ls2.gamma`) on both residual branches, initialised
      to this value (DeiT III 1e-6, DINOv2 1e-5); None or 0: no LayerScale (as timm).
    - `qk_norm`: LayerNorm over each head's channels of q and k before the scaling.
    - `dynamic_img_size`: inputs of any size that the patch divides; the position embedding is
      resampled to the input's patch grid in every forward pass (bicubic, antialiased, as timm).
    - `act_layer`: the MLP activation: 'gelu' (exact), 'quick_gelu' (x * sigmoid(1.702 x), OpenAI
      CLIP) or 'gelu_tanh' (the tanh approximation, as transformers' SigLIP configs ask).
    - `dist_token`: DeiT's distillation token after the class token, with its own head
      (`head_dist`); the two heads' logits are averaged (timm's `VisionTransformerDistilled`).
    """

    img_size: IntPair = (224, 224)
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    global_pool: str = "token"
    fc_norm: Optional[bool] = None
    drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_eps: float = 1e-6  # timm and torchvision; CLIP 1e-5; transformers' ViT configs use 1e-12
    reg_tokens: int = 0
    no_embed_class: bool = False
    pre_norm: bool = False
    init_values: Optional[float] = None
    qk_norm: bool = False
    dynamic_img_size: bool = False
    act_layer: str = "gelu"  # ACTIVATIONS
    dist_token: bool = False
    kernels: Kernels = Kernels()
    remat: str = "none"  # REMAT_CHOICES

    family = "vit"
    head_key = "head.weight"
    intermediates = "blocks"

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", to_pair(self.img_size))
        object.__setattr__(self, "kernels", to_kernels(self.kernels))
        _check_remat(self.remat)
        if self.global_pool not in ("token", "avg", "map"):
            raise InputError(f"global_pool must be 'token', 'avg' or 'map', got {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            raise InputError("global_pool='token' needs the class token: use global_pool='avg' with class_token=False")
        if self.act_layer not in ACTIVATIONS:
            raise InputError(f"act_layer must be one of {ACTIVATIONS}, got {self.act_layer!r}")
        if self.reg_tokens < 0:
            raise InputError(f"reg_tokens must be >= 0, got {self.reg_tokens}")
        if self.dist_token and (self.global_pool != "token" or not self.class_token or self.fc_norm):
            raise InputError("dist_token needs the class token, global_pool='token' and no fc_norm (the two heads "
                             "read the class and distillation tokens after the final norm)")
        if self.dist_token and self.reg_tokens:
            raise InputError("dist_token and reg_tokens do not combine (timm's distilled ViT has no registers)")
        if self.global_pool == "map" and self.fc_norm:
            raise InputError("global_pool='map' normalises the tokens before the attention pooling: fc_norm "
                             "must be None or False")
        if any(s % self.patch_size for s in self.img_size):
            raise InputError(f"img_size {self.img_size} is not a multiple of the patch size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise InputError(f"embed_dim {self.embed_dim} is not divisible by {self.num_heads} heads")

    @property
    def patch_grid(self) -> IntPair:
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        """Class, distillation and register tokens, in that order, before the patch tokens."""
        return int(self.class_token) + int(self.dist_token) + self.reg_tokens

    @property
    def num_tokens(self) -> int:
        return self.patch_grid[0] * self.patch_grid[1] + self.num_prefix_tokens

    @property
    def pos_embed_prefix_tokens(self) -> int:
        """Prefix tokens that have a position embedding: none with `no_embed_class`."""
        return 0 if self.no_embed_class else self.num_prefix_tokens

    @property
    def pos_embed_len(self) -> int:
        return self.patch_grid[0] * self.patch_grid[1] + self.pos_embed_prefix_tokens

    @property
    def use_fc_norm(self) -> bool:
        return self.global_pool == "avg" if self.fc_norm is None else self.fc_norm

    @property
    def num_features(self) -> int:
        return self.embed_dim

    def drop_path_rates(self) -> list[float]:
        """Stochastic-depth rate of every block, linear from 0 to drop_path_rate."""
        return [self.drop_path_rate * i / (self.depth - 1) if self.depth > 1 else 0.0 for i in range(self.depth)]


def _vit(img: int, patch: int, embed: int, depth: int, heads: int) -> dict[str, Any]:
    return dict(img_size=img, patch_size=patch, embed_dim=embed, depth=depth, num_heads=heads)


_VIT_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}
MODELS: dict[str, tuple[type, dict[str, Any]]] = {
    f"vit_{size}_patch16_{img}": (VitConfig, _vit(img, 16, *dims))
    for size, dims in _VIT_SIZES.items() for img in (224, 384)
}
MODELS.update({
    "vit_small_patch32_224": (VitConfig, _vit(224, 32, *_VIT_SIZES["small"])),
    "vit_base_patch32_224": (VitConfig, _vit(224, 32, *_VIT_SIZES["base"])),
    # timm's default weights for this name are the in21k feature extractor: no classifier
    "vit_huge_patch14_224": (VitConfig, {**_vit(224, 14, 1280, 32, 16), "num_classes": 0}),
})

# The ViT families of today's checkpoints, with timm's names and arguments (class counts and image
# sizes are those of timm's default weights, as timm builds a bare name).
_DEIT3 = dict(no_embed_class=True, init_values=1e-6)
_DINOV2_ARGS = dict(init_values=1e-5, num_classes=0)
_REG4 = dict(reg_tokens=4, no_embed_class=True)
_CLIP = dict(pre_norm=True, layer_norm_eps=1e-5)
_SIGLIP = dict(class_token=False, global_pool="map", num_classes=0)
MODELS.update({
    **{f"deit_{size}_patch16_224": (VitConfig, _vit(224, 16, *_VIT_SIZES[size])) for size in ("tiny", "small", "base")},
    **{f"deit_{size}_distilled_patch16_224": (VitConfig, {**_vit(224, 16, *_VIT_SIZES[size]), "dist_token": True})
       for size in ("tiny", "small", "base")},
    **{f"deit3_{size}_patch16_224": (VitConfig, {**_vit(224, 16, *_VIT_SIZES[size]), **_DEIT3})
       for size in ("small", "base", "large")},
    **{f"vit_{size}_patch14_dinov2": (VitConfig, {**_vit(518, 14, *_VIT_SIZES[size]), **_DINOV2_ARGS})
       for size in ("small", "base", "large")},
    **{f"vit_{size}_patch14_reg4_dinov2": (VitConfig, {**_vit(518, 14, *_VIT_SIZES[size]), **_DINOV2_ARGS, **_REG4})
       for size in ("small", "base", "large")},
    "vit_base_patch16_clip_224": (VitConfig, {**_vit(224, 16, *_VIT_SIZES["base"]), **_CLIP}),
    "vit_base_patch32_clip_224": (VitConfig, {**_vit(224, 32, *_VIT_SIZES["base"]), **_CLIP}),
    "vit_base_patch16_clip_quickgelu_224": (VitConfig, {**_vit(224, 16, *_VIT_SIZES["base"]), **_CLIP,
                                                        "act_layer": "quick_gelu", "num_classes": 512}),
    "vit_large_patch14_clip_224": (VitConfig, {**_vit(224, 14, *_VIT_SIZES["large"]), **_CLIP}),
    "vit_base_patch16_siglip_224": (VitConfig, {**_vit(224, 16, *_VIT_SIZES["base"]), **_SIGLIP}),
    "vit_so400m_patch14_siglip_224": (VitConfig, {**_vit(224, 14, 1152, 27, 16), **_SIGLIP, "mlp_ratio": 3.7362}),
})
