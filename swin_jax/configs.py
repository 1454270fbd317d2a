"""Named model configs, kept once as plain data.

This module imports neither jax nor torch: `swin_jax` (Flax) and `swin_torch_ref` (PyTorch) both
build their models from the configs here, and so does the stage/window geometry that decides
where Swin shifts and pads. Names and defaults follow timm's.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from typing import Any, Optional, Union
from swin_jax.arguments import InputError, UnknownOptionError

IntPair = tuple[int, int]


def to_pair(value: Union[int, tuple[int, int], list[int]]) -> IntPair:
    """`7` -> `(7, 7)`; a pair is returned as a tuple of two ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise InputError(f"expected an int or a pair (h, w), got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


# The implementations an op may run with (see `Kernels`); every one computes torch's maths.
KERNEL_CHOICES: dict[str, tuple[str, ...]] = {
    "attention": ("auto", "custom_vjp", "autodiff", "cudnn", "jax"),
    "attention_on_gpu": ("cudnn", "jax", "custom_vjp", "autodiff"),
    "mlp": ("custom_vjp", "autodiff"),
    "layer_norm": ("custom_vjp", "autodiff"),
    "gelu": ("auto", "erf", "erfc"),
    "materialize": ("auto", "barrier", "identity_matmul", "none"),
}


@dataclass(frozen=True)
class Kernels:
    """Which implementation computes each op of a model: a hashable setting of the config, so a
    program traced with one choice is never reused for another. Every choice computes the same
    maths (torch's); they differ in speed, memory, and in what JAX sees (`autodiff` ops are
    plain JAX, differentiated by JAX, so `jax.checkpoint` policies apply to them inside).

    - `attention`: `auto` runs `attention_on_gpu` where the computation is placed on a CUDA GPU
      (bias-free bf16/fp16 attention only, i.e. ViT) and `custom_vjp` elsewhere; `custom_vjp` is
      softmax attention with a written-out backward pass; `autodiff` the same forward,
      differentiated by JAX; `cudnn` / `jax` are `jax.nn.dot_product_attention`'s cuDNN and XLA
      implementations for bias-free bf16/fp16 attention (`custom_vjp` where that does not apply).
    - `mlp`, `layer_norm`: `custom_vjp` (written-out backward passes that keep what torch keeps)
      or `autodiff`.
    - `gelu`: the exact GELU as `erf` (torch's form) or `erfc` (jax.nn.gelu's); `auto` is erf on
      GPUs and erfc elsewhere, chosen by the platform the computation is placed on.
    - `materialize`: how the written-out backward passes compute a value once into its own buffer:
      `barrier` (jax.lax.optimization_barrier; XLA:CPU ignores it), `identity_matmul` (an exact
      product with an identity matrix; an inf becomes NaN in its row), `none`; `auto` is barrier
      on GPUs and identity_matmul elsewhere.
    """

    attention: str = "auto"
    attention_on_gpu: str = "cudnn"
    mlp: str = "custom_vjp"
    layer_norm: str = "custom_vjp"
    gelu: str = "auto"
    materialize: str = "auto"

    def __post_init__(self) -> None:
        for name, choices in KERNEL_CHOICES.items():
            if getattr(self, name) not in choices:
                raise InputError(f"kernels.{name} must be one of {choices}, got {getattr(self, name)!r}")


def to_kernels(value: Union[Kernels, dict, None]) -> Kernels:
    """A `Kernels` from a `Kernels`, a dict of its fields, or None (the defaults)."""
    if value is None:
        return Kernels()
    if isinstance(value, Kernels):
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(KERNEL_CHOICES))
        if unknown:
            raise InputError(f"unknown kernel setting(s) {unknown}; settings are {list(KERNEL_CHOICES)}")
        return Kernels(**value)
    raise TypeError(f"kernels must be a swin_jax.Kernels or a dict, got {type(value).__name__}")


# Activation rematerialisation (`remat` of a model config): what the backward pass recomputes
# instead of keeping from the forward pass. "block": each transformer block (and Swin's patch
# embedding and patch merging layers) keeps only its input and is run again in the backward pass
# (memory per block ~ its input; one more forward pass of compute); "attention": only the
# attention module of each block is recomputed (its qkv, its (heads, N, N) scores and
# probabilities, its output projection are not kept); "none": everything is kept.
REMAT_CHOICES = ("none", "block", "attention")
# MLP activations of the ViT (timm's act_layer names): the exact GELU, OpenAI CLIP's QuickGELU,
# and the tanh-approximated GELU
ACTIVATIONS = ("gelu", "quick_gelu", "gelu_tanh")


def _check_remat(value: str) -> None:
    if value not in REMAT_CHOICES:
        raise InputError(f"remat must be one of {REMAT_CHOICES}, got {value!r}")


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


def _swin(img: int, embed: int, depths: tuple[int, ...], heads: tuple[int, ...], window: int) -> dict[str, Any]:
    return dict(img_size=img, embed_dim=embed, depths=depths, num_heads=heads, window_size=window)


_SWIN_T = ((2, 2, 6, 2), (3, 6, 12, 24))
_SWIN_S = ((2, 2, 18, 2), (3, 6, 12, 24))
_SWIN_B = ((2, 2, 18, 2), (4, 8, 16, 32))
_SWIN_L = ((2, 2, 18, 2), (6, 12, 24, 48))

# name -> (config class, arguments). timm's names and values.
MODEL_CONFIGS: dict[str, tuple[type, dict[str, Any]]] = {
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
MODEL_CONFIGS.update({
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


def _vit(img: int, patch: int, embed: int, depth: int, heads: int) -> dict[str, Any]:
    return dict(img_size=img, patch_size=patch, embed_dim=embed, depth=depth, num_heads=heads)


_VIT_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}
MODEL_CONFIGS.update({
    f"vit_{size}_patch16_{img}": (VitConfig, _vit(img, 16, *dims))
    for size, dims in _VIT_SIZES.items() for img in (224, 384)
})
MODEL_CONFIGS.update({
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
MODEL_CONFIGS.update({
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


# ----- pretrained weights: timm's tags, where they live on the Hugging Face Hub, how images are prepared

IMAGENET = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # Google's ViT weights: pixels in [-1, 1]
OPENAI_CLIP = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = IMAGENET
INCEPTION_MEAN, INCEPTION_STD = INCEPTION


@dataclass(frozen=True)
class DataConfig:
    """How images are prepared for a model: the evaluation transform resizes the shorter side to
    `size / crop_pct` with `interpolation`, center-crops `size` and normalises with mean / std."""

    interpolation: str = "bicubic"
    crop_pct: float = 0.9
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


# The class-name set of a classifier, from its class count (as timm infers it).
LABEL_SETS = {1000: "imagenet-1k", 11821: "imagenet-12k", 21841: "imagenet-22k", 21843: "imagenet-21k-goog"}


@dataclass(frozen=True)
class PretrainedConfig:
    """One set of pretrained weights, named as timm names them (`architecture.tag`): the Hub
    repository holding them, what they classify and how images are prepared for them."""

    name: str  # "swin_tiny_patch4_window7_224.ms_in1k"
    num_classes: int  # 0: a feature extractor, no classifier
    data: DataConfig
    license: Optional[str] = None
    repo: Optional[str] = None  # where timm keeps them under another name (the same weights); None: their own

    @property
    def architecture(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def hf_hub_id(self) -> str:
        """The Hub repository: timm publishes a tag as `timm/<architecture>.<tag>`, or shares another
        architecture's repository (CLIP's QuickGELU variants read the plain CLIP weights)."""
        return self.repo or f"timm/{self.name}"

    @property
    def labels(self) -> Optional[str]:
        """The class-name set (`swin_jax.labels`), None when the classes have no shipped names."""
        return LABEL_SETS.get(self.num_classes)


# (architecture.tag, classes, (mean, std), crop_pct, license) in timm's order: an architecture's
# first tag is its default. Every one is evaluated with bicubic resizing and a center crop.
_PRETRAINED = [
    ("swin_base_patch4_window12_384.ms_in22k_ft_in1k", 1000, IMAGENET, 1.0, 'mit'),
    ("swin_base_patch4_window12_384.ms_in1k", 1000, IMAGENET, 1.0, 'mit'),
    ("swin_base_patch4_window12_384.ms_in22k", 21841, IMAGENET, 1.0, 'mit'),
    ("swin_base_patch4_window7_224.ms_in22k_ft_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("swin_base_patch4_window7_224.ms_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("swin_base_patch4_window7_224.ms_in22k", 21841, IMAGENET, 0.9, 'mit'),
    ("swin_large_patch4_window12_384.ms_in22k_ft_in1k", 1000, IMAGENET, 1.0, 'mit'),
    ("swin_large_patch4_window12_384.ms_in22k", 21841, IMAGENET, 1.0, 'mit'),
    ("swin_large_patch4_window7_224.ms_in22k_ft_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("swin_large_patch4_window7_224.ms_in22k", 21841, IMAGENET, 0.9, 'mit'),
    ("swin_small_patch4_window7_224.ms_in22k_ft_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("swin_small_patch4_window7_224.ms_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("swin_small_patch4_window7_224.ms_in22k", 21841, IMAGENET, 0.9, 'mit'),
    ("swin_tiny_patch4_window7_224.ms_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("swin_tiny_patch4_window7_224.ms_in22k_ft_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("swin_tiny_patch4_window7_224.ms_in22k", 21841, IMAGENET, 0.9, 'mit'),
    ("swinv2_base_window12_192.ms_in22k", 21841, IMAGENET, 0.9, 'mit'),
    ("swinv2_base_window12to16_192to256.ms_in22k_ft_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("swinv2_base_window12to24_192to384.ms_in22k_ft_in1k", 1000, IMAGENET, 1.0, 'mit'),
    ("swinv2_base_window16_256.ms_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("swinv2_base_window8_256.ms_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("swinv2_large_window12_192.ms_in22k", 21841, IMAGENET, 0.9, 'mit'),
    ("swinv2_large_window12to16_192to256.ms_in22k_ft_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("swinv2_large_window12to24_192to384.ms_in22k_ft_in1k", 1000, IMAGENET, 1.0, 'mit'),
    ("swinv2_small_window16_256.ms_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("swinv2_small_window8_256.ms_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("swinv2_tiny_window16_256.ms_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("swinv2_tiny_window8_256.ms_in1k", 1000, IMAGENET, 0.9, 'mit'),
    ("vit_base_patch16_224.augreg2_in21k_ft_in1k", 1000, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_base_patch16_224.augreg_in21k_ft_in1k", 1000, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_base_patch16_224.orig_in21k_ft_in1k", 1000, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_base_patch16_224.augreg_in1k", 1000, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_base_patch16_224.orig_in21k", 0, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_base_patch16_224.augreg_in21k", 21843, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_base_patch16_224.sam_in1k", 1000, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_base_patch16_224.bamboo", 115217, OPENAI_CLIP, 1.0, None),
    ("vit_base_patch16_224.dino", 0, IMAGENET, 0.9, 'apache-2.0'),
    ("vit_base_patch16_224.mae", 0, IMAGENET, 0.9, 'cc-by-nc-4.0'),
    ("vit_base_patch16_384.augreg_in21k_ft_in1k", 1000, INCEPTION, 1.0, 'apache-2.0'),
    ("vit_base_patch16_384.orig_in21k_ft_in1k", 1000, INCEPTION, 1.0, 'apache-2.0'),
    ("vit_base_patch16_384.augreg_in1k", 1000, INCEPTION, 1.0, 'apache-2.0'),
    ("vit_base_patch32_224.augreg_in21k_ft_in1k", 1000, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_base_patch32_224.augreg_in1k", 1000, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_base_patch32_224.orig_in21k", 0, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_base_patch32_224.augreg_in21k", 21843, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_base_patch32_224.sam_in1k", 1000, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_huge_patch14_224.orig_in21k", 0, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_huge_patch14_224.mae", 0, IMAGENET, 0.9, 'cc-by-nc-4.0'),
    ("vit_large_patch16_224.augreg_in21k_ft_in1k", 1000, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_large_patch16_224.orig_in21k", 0, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_large_patch16_224.augreg_in21k", 21843, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_large_patch16_224.mae", 0, IMAGENET, 0.9, 'cc-by-nc-4.0'),
    ("vit_large_patch16_384.augreg_in21k_ft_in1k", 1000, INCEPTION, 1.0, 'apache-2.0'),
    ("vit_small_patch16_224.augreg_in21k_ft_in1k", 1000, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_small_patch16_224.augreg_in1k", 1000, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_small_patch16_224.augreg_in21k", 21843, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_small_patch16_224.dino", 0, IMAGENET, 0.9, 'apache-2.0'),
    ("vit_small_patch16_384.augreg_in21k_ft_in1k", 1000, INCEPTION, 1.0, 'apache-2.0'),
    ("vit_small_patch16_384.augreg_in1k", 1000, INCEPTION, 1.0, 'apache-2.0'),
    ("vit_small_patch32_224.augreg_in21k_ft_in1k", 1000, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_small_patch32_224.augreg_in21k", 21843, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", 1000, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_tiny_patch16_224.augreg_in21k", 21843, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_tiny_patch16_384.augreg_in21k_ft_in1k", 1000, INCEPTION, 1.0, 'apache-2.0'),
    # DeiT, DeiT III, DINOv2, CLIP and SigLIP image towers (timm's order within an architecture)
    ("deit_tiny_patch16_224.fb_in1k", 1000, IMAGENET, 0.9, 'apache-2.0'),
    ("deit_small_patch16_224.fb_in1k", 1000, IMAGENET, 0.9, 'apache-2.0'),
    ("deit_base_patch16_224.fb_in1k", 1000, IMAGENET, 0.9, 'apache-2.0'),
    ("deit_tiny_distilled_patch16_224.fb_in1k", 1000, IMAGENET, 0.9, 'apache-2.0'),
    ("deit_small_distilled_patch16_224.fb_in1k", 1000, IMAGENET, 0.9, 'apache-2.0'),
    ("deit_base_distilled_patch16_224.fb_in1k", 1000, IMAGENET, 0.9, 'apache-2.0'),
    ("deit3_small_patch16_224.fb_in1k", 1000, IMAGENET, 0.9, 'apache-2.0'),
    ("deit3_small_patch16_224.fb_in22k_ft_in1k", 1000, IMAGENET, 1.0, 'apache-2.0'),
    ("deit3_base_patch16_224.fb_in1k", 1000, IMAGENET, 0.9, 'apache-2.0'),
    ("deit3_base_patch16_224.fb_in22k_ft_in1k", 1000, IMAGENET, 1.0, 'apache-2.0'),
    ("deit3_large_patch16_224.fb_in1k", 1000, IMAGENET, 0.9, 'apache-2.0'),
    ("deit3_large_patch16_224.fb_in22k_ft_in1k", 1000, IMAGENET, 1.0, 'apache-2.0'),
    ("vit_small_patch14_dinov2.lvd142m", 0, IMAGENET, 1.0, 'apache-2.0'),
    ("vit_base_patch14_dinov2.lvd142m", 0, IMAGENET, 1.0, 'apache-2.0'),
    ("vit_large_patch14_dinov2.lvd142m", 0, IMAGENET, 1.0, 'apache-2.0'),
    ("vit_small_patch14_reg4_dinov2.lvd142m", 0, IMAGENET, 1.0, 'apache-2.0'),
    ("vit_base_patch14_reg4_dinov2.lvd142m", 0, IMAGENET, 1.0, 'apache-2.0'),
    ("vit_large_patch14_reg4_dinov2.lvd142m", 0, IMAGENET, 1.0, 'apache-2.0'),
    ("vit_base_patch16_clip_224.laion2b_ft_in12k_in1k", 1000, OPENAI_CLIP, 0.95, 'apache-2.0'),
    ("vit_base_patch16_clip_224.openai_ft_in12k_in1k", 1000, OPENAI_CLIP, 0.95, 'apache-2.0'),
    ("vit_base_patch16_clip_224.laion2b_ft_in1k", 1000, OPENAI_CLIP, 1.0, 'apache-2.0'),
    ("vit_base_patch16_clip_224.openai_ft_in1k", 1000, OPENAI_CLIP, 0.9, 'apache-2.0'),
    ("vit_base_patch16_clip_224.laion2b_ft_in12k", 11821, OPENAI_CLIP, 0.9, 'apache-2.0'),
    ("vit_base_patch16_clip_224.openai_ft_in12k", 11821, OPENAI_CLIP, 0.9, 'apache-2.0'),
    ("vit_base_patch16_clip_224.laion2b", 512, OPENAI_CLIP, 1.0, 'apache-2.0'),
    ("vit_base_patch16_clip_224.laion400m_e32", 512, OPENAI_CLIP, 1.0, 'mit'),
    ("vit_base_patch16_clip_224.datacompxl", 512, OPENAI_CLIP, 1.0, 'apache-2.0'),
    ("vit_base_patch16_clip_224.dfn2b", 512, OPENAI_CLIP, 1.0, 'apple-ascl'),
    ("vit_base_patch16_clip_224.metaclip_2pt5b", 512, OPENAI_CLIP, 1.0, 'cc-by-nc-4.0'),
    ("vit_base_patch16_clip_224.metaclip_400m", 512, OPENAI_CLIP, 1.0, 'cc-by-nc-4.0'),
    ("vit_base_patch16_clip_224.openai", 512, OPENAI_CLIP, 0.9, 'apache-2.0'),
    ("vit_base_patch32_clip_224.laion2b_ft_in12k_in1k", 1000, OPENAI_CLIP, 0.9, 'apache-2.0'),
    ("vit_base_patch32_clip_224.laion2b_ft_in1k", 1000, OPENAI_CLIP, 0.9, 'apache-2.0'),
    ("vit_base_patch32_clip_224.openai_ft_in1k", 1000, OPENAI_CLIP, 0.9, 'apache-2.0'),
    ("vit_base_patch32_clip_224.laion2b", 512, OPENAI_CLIP, 0.9, 'apache-2.0'),
    ("vit_base_patch32_clip_224.laion400m_e32", 512, OPENAI_CLIP, 0.9, 'mit'),
    ("vit_base_patch32_clip_224.datacompxl", 512, OPENAI_CLIP, 1.0, 'apache-2.0'),
    ("vit_base_patch32_clip_224.metaclip_2pt5b", 512, OPENAI_CLIP, 1.0, 'cc-by-nc-4.0'),
    ("vit_base_patch32_clip_224.metaclip_400m", 512, OPENAI_CLIP, 1.0, 'cc-by-nc-4.0'),
    ("vit_base_patch32_clip_224.openai", 512, OPENAI_CLIP, 0.9, 'apache-2.0'),
    ("vit_base_patch16_clip_quickgelu_224.metaclip_2pt5b", 512, OPENAI_CLIP, 1.0, 'cc-by-nc-4.0'),
    ("vit_base_patch16_clip_quickgelu_224.metaclip_400m", 512, OPENAI_CLIP, 1.0, 'cc-by-nc-4.0'),
    ("vit_base_patch16_clip_quickgelu_224.openai", 512, OPENAI_CLIP, 0.9, 'apache-2.0'),
    ("vit_large_patch14_clip_224.laion2b_ft_in12k_in1k", 1000, INCEPTION, 1.0, 'apache-2.0'),
    ("vit_large_patch14_clip_224.openai_ft_in12k_in1k", 1000, OPENAI_CLIP, 1.0, 'apache-2.0'),
    ("vit_large_patch14_clip_224.laion2b_ft_in1k", 1000, INCEPTION, 1.0, 'apache-2.0'),
    ("vit_large_patch14_clip_224.openai_ft_in1k", 1000, OPENAI_CLIP, 1.0, 'apache-2.0'),
    ("vit_large_patch14_clip_224.laion2b_ft_in12k", 11821, INCEPTION, 1.0, 'apache-2.0'),
    ("vit_large_patch14_clip_224.openai_ft_in12k", 11821, OPENAI_CLIP, 1.0, 'apache-2.0'),
    ("vit_large_patch14_clip_224.laion2b", 768, INCEPTION, 1.0, 'apache-2.0'),
    ("vit_large_patch14_clip_224.laion400m_e32", 768, OPENAI_CLIP, 1.0, 'mit'),
    ("vit_large_patch14_clip_224.datacompxl", 768, OPENAI_CLIP, 1.0, 'apache-2.0'),
    ("vit_large_patch14_clip_224.dfn2b_s39b", 768, OPENAI_CLIP, 1.0, 'apple-ascl'),
    ("vit_large_patch14_clip_224.dfn2b", 768, OPENAI_CLIP, 1.0, 'apple-ascl'),
    ("vit_large_patch14_clip_224.metaclip_2pt5b", 768, OPENAI_CLIP, 1.0, 'cc-by-nc-4.0'),
    ("vit_large_patch14_clip_224.metaclip_400m", 768, OPENAI_CLIP, 1.0, 'cc-by-nc-4.0'),
    ("vit_large_patch14_clip_224.openai", 768, OPENAI_CLIP, 1.0, 'apache-2.0'),
    ("vit_large_patch14_clip_224.apple_mclip2_dfndr2b", 768, OPENAI_CLIP, 1.0, 'apple-amlr'),
    ("vit_base_patch16_siglip_224.v2_webli", 0, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_base_patch16_siglip_224.webli", 0, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_so400m_patch14_siglip_224.v2_webli", 0, INCEPTION, 0.9, 'apache-2.0'),
    ("vit_so400m_patch14_siglip_224.webli", 0, INCEPTION, 0.9, 'apache-2.0'),
]
# tags whose weights timm keeps in another architecture's repository
_SHARED_REPOS = {f"vit_base_patch16_clip_quickgelu_224.{tag}": f"timm/vit_base_patch16_clip_224.{tag}"
                 for tag in ("metaclip_2pt5b", "metaclip_400m", "openai")}
PRETRAINED: dict[str, PretrainedConfig] = {
    name: PretrainedConfig(name, classes, DataConfig("bicubic", crop_pct, *norm), license, _SHARED_REPOS.get(name))
    # by architecture, as list_models sorts them (a stable sort: each one's tags stay in timm's order)
    for name, classes, norm, crop_pct, license in sorted(_PRETRAINED, key=lambda row: row[0].split(".")[0])
}
DEFAULT_TAGS: dict[str, str] = {}  # architecture -> its default tag's full name
for _name in PRETRAINED:
    DEFAULT_TAGS.setdefault(_name.split(".")[0], _name)
# Image preparation of each architecture: its default weights', as timm's `resolve_data_config`
# gives it for a bare name.
DATA_CONFIGS: dict[str, DataConfig] = {name: PRETRAINED[DEFAULT_TAGS[name]].data for name in MODEL_CONFIGS}


def split_model_name(name: str) -> tuple[str, Optional[str]]:
    """`"arch.tag"` -> `("arch", "tag")`; a bare `"arch"` -> `("arch", None)`."""
    architecture, _, tag = name.partition(".")
    return architecture, tag or None


def get_pretrained_config(name: str) -> PretrainedConfig:
    """The pretrained weights `name` names: `architecture.tag`, or a bare architecture for its
    default tag (timm's). Unknown names raise a ValueError listing the tags there are."""
    architecture, tag = split_model_name(name)
    get_config(architecture)  # unknown architectures fail with the usual message
    full = DEFAULT_TAGS.get(architecture) if tag is None else name
    if full not in PRETRAINED:
        known = ", ".join(list_pretrained(architecture + ".*")) or "none"
        raise InputError(f"no pretrained weights {name!r}; {architecture} has: {known}")
    return PRETRAINED[full]


def list_pretrained(pattern: str = "*") -> list[str]:
    """Names (`architecture.tag`) of the pretrained weights matching a shell-style `pattern`,
    each architecture's in timm's order (its default first)."""
    return [name for name in PRETRAINED if fnmatch.fnmatch(name, pattern)]


def get_data_config(name: str, **overrides: Any) -> DataConfig:
    """The image preparation of model `name` (timm's for its default weights) or of pretrained
    weights `architecture.tag`, with overrides (`crop_pct`, `interpolation`, `mean`, `std`;
    None values are ignored)."""
    if "." in name:
        base = get_pretrained_config(name).data
    else:
        get_config(name)  # unknown names fail with the usual message
        base = DATA_CONFIGS[name]
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
    return dataclasses.replace(base, **given)


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered model configs matching a shell-style `pattern`, sorted."""
    return sorted(name for name in MODEL_CONFIGS if fnmatch.fnmatch(name, pattern))


def get_config(name: str, **overrides: Any) -> Union[SwinConfig, SwinV2Config, VitConfig]:
    """The config registered as `name`, with `overrides` applied (unknown keys are an error)."""
    if name not in MODEL_CONFIGS:
        close = [n for n in MODEL_CONFIGS if name.split("_")[0] in n]
        hint = f"; known: {', '.join(close or list_models())}"
        raise InputError(f"unknown model {name!r}{hint}")
    config_cls, args = MODEL_CONFIGS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UnknownOptionError(f"{name} has no option(s) {unknown}; options are {sorted(fields)}")
    annotations = {f.name: str(f.type) for f in dataclasses.fields(config_cls)}
    for key, value in overrides.items():  # a wrong kind of value fails here, not deep in the model
        kind = OPTION_KINDS.get(annotations[key])
        if kind is not None and not (isinstance(value, kind[0]) and (kind[0] == (bool,) or not isinstance(value, bool))):
            raise InputError(f"{name}: option {key}={value!r} wants {kind[1]}")
    if not overrides:
        return config_cls(**args)  # a registered config is good: an error here is a bug
    try:
        return config_cls(**{**args, **overrides})
    except InputError:
        raise
    except (ValueError, TypeError, ZeroDivisionError) as err:  # the overrides make no model
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        raise InputError(f"{name} with {given} is no valid config ({type(err).__name__}: {err})") from None


# The values a config field of a plain annotated type takes: (types, words).
OPTION_KINDS = {"int": ((int,), "a whole number"), "float": ((int, float), "a number"),
                "bool": ((bool,), "True or False"), "str": ((str,), "a string")}
