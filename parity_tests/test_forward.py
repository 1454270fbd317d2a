"""Forward parity of every case of the three families: swin_jax vs swin_torch_ref and vs timm, every
parameter at O(1) scale; logits and every intermediate within 1e-5 * max(1, max|ref|)."""
import math

import jax.numpy as jnp
import pytest
import torch
from cases import AVG, CUSTOM_200x264, SWIN_CASES, SWINV2_CASES, VIT_CASES
from conftest import FORWARD_TOL, build_case, check_case, nchw_to_nhwc, rel_diff, timm_model

import swin_jax
import swin_torch_ref


@pytest.fixture(scope="module", params=SWIN_CASES + SWINV2_CASES + VIT_CASES)
def case(request):
    return build_case(*request.param)


def test_forward_vs_swin_torch_ref(case, record):
    check_case(case, case.ref_model, "swin_torch_ref", record)
    if case.ref_model.config.family == "swinv2":  # logit scales below and above log(100), where the clamp acts
        scales = torch.cat([p.flatten() for n, p in case.ref_model.named_parameters() if n.endswith("logit_scale")])
        assert (scales < math.log(100)).any() and (scales > math.log(100)).any()


def test_forward_vs_timm(case, record):
    model = timm_model(case.name, **case.overrides)
    model.load_state_dict(case.ref_model.state_dict(), strict=True)
    check_case(case, model, "timm", record)


@pytest.mark.parametrize("name, overrides, features_shape", [
    ("swin_tiny_patch4_window7_224", CUSTOM_200x264, (2, 7, 9, 256)),  # final NHWC map
    ("swinv2_tiny_window8_256", {"img_size": (72, 104), "embed_dim": 24}, (2, 3, 4, 192)),
    ("vit_tiny_patch16_224", {"img_size": (64, 96)}, (2, 1 + 4 * 6, 192)),  # tokens
    ("vit_tiny_patch16_224", {**AVG, "img_size": (64, 96)}, (2, 1 + 4 * 6, 192)),
], ids=["swin", "swinv2", "vit-token", "vit-avg"])
def test_headless_features_vs_timm(name, overrides, features_shape, record):
    """num_classes=0 gives the pooled vector; forward_features the final map or token sequence."""
    overrides = {**overrides, "num_classes": 0}
    theirs = swin_torch_ref.randomize_parameters(timm_model(name, **overrides), seed=3)
    model = swin_jax.create_model(name, **overrides)
    params = swin_jax.from_torch(model, theirs.state_dict())
    assert "head" not in params
    images = torch.randn(2, 3, *model.config.img_size, generator=torch.Generator().manual_seed(2))
    x = jnp.asarray(nchw_to_nhwc(images))
    with torch.no_grad():
        pooled, features = theirs(images).numpy(), theirs.forward_features(images).numpy()
    ours_features = model.apply({"params": params}, x, method="forward_features")
    ours_pooled = model.apply({"params": params}, x)
    assert ours_features.shape == features_shape and ours_pooled.shape == (2, features_shape[-1])
    family = model.config.family
    assert record(f"{family} forward_features vs timm", rel_diff(features, ours_features)) <= FORWARD_TOL
    assert record(f"{family} pooled features vs timm", rel_diff(pooled, ours_pooled)) <= FORWARD_TOL
