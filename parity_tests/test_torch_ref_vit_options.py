"""swin_torch_ref's ViT options against timm: same state_dict keys and shapes, same norms' eps,
and with the same O(1) weights the same block outputs, features and logits (fp32)."""
from __future__ import annotations

from functools import partial
from typing import Any, Optional

import pytest
import torch
from conftest import FORWARD_TOL, rel_diff, timm_model
from torch import nn

import swin_torch_ref
from swin_jax.configs import IntPair
from swin_jax.parity import torch_outputs

SMALL = dict(depth=2, embed_dim=64, num_heads=4)
P14 = dict(SMALL, img_size=(42, 56))  # 3x4 patches
P16 = dict(SMALL, img_size=(48, 64))  # 3x4 patches

# id -> (timm name, overrides, input size (None: img_size)). Inputs of another size are smaller
# along one axis and larger along the other, so the resampling both shrinks (antialiased) and grows.
CASES: dict[str, tuple[str, dict[str, Any], Optional[IntPair]]] = {
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(P16, num_classes=10), None),
    "deit_distilled_dynamic": ("deit_tiny_distilled_patch16_224", dict(P16, num_classes=10, dynamic_img_size=True),
                               (32, 80)),
    "deit3": ("deit3_small_patch16_224", dict(P16, num_classes=10), None),
    "deit3_qk_norm": ("deit3_small_patch16_224", dict(P16, num_classes=10, qk_norm=True), None),
    "dinov2_reg4_dynamic": ("vit_small_patch14_reg4_dinov2", dict(P14, dynamic_img_size=True), (28, 70)),
    "dinov2_reg4_dynamic_head": ("vit_small_patch14_reg4_dinov2", dict(P14, dynamic_img_size=True, num_classes=7),
                                 (56, 42)),
    # registers with the position embedding on every token: its 3 prefix entries kept as they are
    "dinov2_reg2_embed_class_dynamic": ("vit_small_patch14_dinov2",
                                        dict(P14, reg_tokens=2, dynamic_img_size=True, num_classes=7), (70, 28)),
    "clip_quickgelu": ("vit_base_patch16_clip_quickgelu_224", dict(P16, num_classes=16), None),
    "siglip_map": ("vit_base_patch16_siglip_224", dict(P16), None),
    "siglip_map_head_gelu_tanh": ("vit_base_patch16_siglip_224", dict(P16, num_classes=10, act_layer="gelu_tanh"),
                                  None),
    # a large eps shows that every norm takes it: blocks, qk-norm, the pool's norm
    "siglip_map_qk_norm_eps": ("vit_base_patch16_siglip_224",
                               dict(P16, num_classes=10, qk_norm=True, layer_norm_eps=0.3), None),
    "map_after_class_token": ("vit_tiny_patch16_224", dict(P16, num_classes=10, global_pool="map", reg_tokens=1),
                              None),
    "avg_registers_no_class": ("vit_tiny_patch16_224",
                               dict(P16, num_classes=10, global_pool="avg", class_token=False, reg_tokens=2), None),
    "gelu_tanh_layer_scale_pre_norm": ("vit_tiny_patch16_224",
                                       dict(P16, num_classes=10, act_layer="gelu_tanh", init_values=0.5,
                                            pre_norm=True), None),
}


def timm_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Our overrides in timm's words: the eps goes into norm_layer; dist_token is in the name."""
    import timm.layers

    out = {k: v for k, v in overrides.items() if k not in ("layer_norm_eps", "dist_token")}
    if "layer_norm_eps" in overrides:
        out["norm_layer"] = partial(timm.layers.LayerNorm, eps=overrides["layer_norm_eps"])
    return out


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("case_id", CASES)
def test_vit_option_matches_timm(case_id, record):
    name, overrides, input_size = CASES[case_id]
    ours = swin_torch_ref.randomize_parameters(swin_torch_ref.create_model(name, **overrides), seed=0)
    theirs = timm_model(name, **timm_overrides(overrides))
    cfg = ours.config
    assert shapes(ours) == shapes(theirs)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    our_modules = dict(ours.named_modules())
    norms = {n: m.eps for n, m in theirs.named_modules() if isinstance(m, nn.LayerNorm)}
    assert norms == {n: our_modules[n].eps for n in norms}, "a norm's eps differs from timm's"
    assert all(eps == cfg.layer_norm_eps for eps in norms.values())

    images = torch.randn(2, cfg.in_chans, *(input_size or cfg.img_size), generator=torch.Generator().manual_seed(1))
    ref_blocks, ref_logits = torch_outputs(theirs, images, cfg)
    with torch.no_grad():
        blocks, features, logits = ours.forward_intermediates(images), ours.forward_features(images), ours(images)
        ref_features = theirs.forward_features(images)
    assert len(blocks) == len(ref_blocks) == cfg.depth
    label = f"torch_ref vit {case_id} vs timm"
    for i, (r, o) in enumerate(zip(ref_blocks, blocks, strict=True)):
        assert record(label, rel_diff(r, o)) <= FORWARD_TOL, f"block {i}"
    assert record(label, rel_diff(ref_features, features)) <= FORWARD_TOL, "forward_features"
    assert record(label, rel_diff(ref_logits, logits)) <= FORWARD_TOL, "logits"
    num_tokens = cfg.num_prefix_tokens + (images.shape[2] // cfg.patch_size) * (images.shape[3] // cfg.patch_size)
    assert features.shape == (2, num_tokens, cfg.embed_dim)


@pytest.mark.parametrize("overrides, size, message", [
    (dict(P14), (56, 42), "built for 42x56 images, got 56x42"),
    (dict(P14, dynamic_img_size=True), (56, 40), "input size 56x40 is not a multiple of the patch size 14"),
])
def test_bad_input_size_is_named(overrides, size, message):
    model = swin_torch_ref.create_model("vit_small_patch14_reg4_dinov2", **overrides)
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(1, 3, *size))
