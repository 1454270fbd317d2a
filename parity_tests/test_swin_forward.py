"""Swin forward cases (run by test_forward.py) and Swin-only forward checks."""
import jax.numpy as jnp
import pytest
import torch
from conftest import FORWARD_TOL, nchw_to_nhwc, rel_diff, timm_model

import swin_jax
import swin_torch_ref

CUSTOM_200x264 = dict(img_size=(200, 264), embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4))
# non-square window, patch 2, 3 stages, 1 input channel, maps (30x46 -> 15x23 -> 8x12) no window divides
CUSTOM_WINDOW_5x7 = dict(img_size=(60, 92), patch_size=2, window_size=(5, 7), embed_dim=24, depths=(2, 2, 2),
                         num_heads=(2, 3, 4), num_classes=17, in_chans=1)

SWIN_CASES = [
    pytest.param(("tiny224", "swin_tiny_patch4_window7_224", {}, 2), id="tiny224"),
    pytest.param(("custom200x264", "swin_tiny_patch4_window7_224", CUSTOM_200x264, 2), id="custom200x264"),
    pytest.param(("custom60x92-window5x7", "swin_tiny_patch4_window7_224", CUSTOM_WINDOW_5x7, 2), id="custom60x92-window5x7"),
    pytest.param(("small224", "swin_small_patch4_window7_224", {}, 2), id="small224", marks=pytest.mark.slow),
    pytest.param(("base384-window12", "swin_base_patch4_window12_384", {}, 1), id="base384-window12", marks=pytest.mark.slow),
]


def test_pooled_features_and_feature_map_vs_timm(record):
    """num_classes=0 returns the pooled features; forward_features the final normalised map."""
    overrides = {**CUSTOM_200x264, "num_classes": 0}
    theirs = swin_torch_ref.randomize_parameters(timm_model("swin_tiny_patch4_window7_224", **overrides), seed=3)
    model = swin_jax.create_model("swin_tiny_patch4_window7_224", **overrides)
    params = swin_jax.from_torch(model, theirs.state_dict())
    assert "head" not in params
    images = torch.randn(2, 3, 200, 264, generator=torch.Generator().manual_seed(2))
    x = jnp.asarray(nchw_to_nhwc(images))
    with torch.no_grad():
        pooled, feature_map = theirs(images).numpy(), theirs.forward_features(images).numpy()
    ours_pooled = model.apply({"params": params}, x)
    ours_map = model.apply({"params": params}, x, method="forward_features")
    assert ours_pooled.shape == (2, 256) and ours_map.shape == (2, 7, 9, 256)
    assert record("swin pooled features vs timm", rel_diff(pooled, ours_pooled)) <= FORWARD_TOL
    assert record("swin forward_features vs timm", rel_diff(feature_map, ours_map)) <= FORWARD_TOL
