"""ViT forward cases (run by test_forward.py) and ViT-only checks: modes, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import randomize_jax_params

import swin_jax

AVG = dict(global_pool="avg")  # timm: mean of the patch tokens, then fc_norm
AVG_NO_CLASS = dict(global_pool="avg", class_token=False)
# Google's 'gap' head: normalise the tokens, then average
CUSTOM_GAP = dict(img_size=(96, 160), patch_size=8, embed_dim=64, depth=4, num_heads=4, mlp_ratio=3.0, global_pool="avg",
                  fc_norm=False, num_classes=11, in_chans=2)

VIT_CASES = [
    pytest.param(("tiny224", "vit_tiny_patch16_224", {}, 2), id="tiny224"),
    pytest.param(("tiny224-avg", "vit_tiny_patch16_224", AVG, 2), id="tiny224-avg"),
    pytest.param(("small224", "vit_small_patch16_224", {}, 2), id="small224"),
    pytest.param(("small224-avg-noclass", "vit_small_patch16_224", AVG_NO_CLASS, 2), id="small224-avg-noclass"),
    pytest.param(("small32-224", "vit_small_patch32_224", {}, 2), id="small32-224"),
    pytest.param(("custom96x160-gap", "vit_tiny_patch16_224", CUSTOM_GAP, 2), id="custom96x160-gap"),
    pytest.param(("base224", "vit_base_patch16_224", {}, 2), id="base224", marks=pytest.mark.slow),
    pytest.param(("base224-avg", "vit_base_patch16_224", AVG, 2), id="base224-avg", marks=pytest.mark.slow),
    pytest.param(("small384", "vit_small_patch16_384", {}, 1), id="small384", marks=pytest.mark.slow),
]


def test_train_mode_drop_path_and_bf16():
    model = swin_jax.create_model("vit_tiny_patch16_224", img_size=(64, 64), drop_path_rate=0.3)
    params = randomize_jax_params(swin_jax.init_params(model, 0), seed=1)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 64, 64, 3))
    apply = jax.jit(model.apply, static_argnames="train")
    a = apply({"params": params}, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    np.testing.assert_array_equal(a, apply({"params": params}, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)}))
    assert not np.allclose(a, apply({"params": params}, x))
    bf16 = swin_jax.create_model("vit_tiny_patch16_224", img_size=(64, 64), dtype=jnp.bfloat16)
    out = jax.jit(bf16.apply)({"params": params}, x)
    ref = np.asarray(apply({"params": params}, x))
    assert out.dtype == jnp.bfloat16
    assert np.abs(np.asarray(out, np.float32) - ref).max() / np.abs(ref).max() <= 2e-2


@pytest.mark.parametrize("shape, message", [
    ((2, 3, 64, 96), r"channels-first \(NCHW\)"),
    ((2, 64, 96, 1), "expected 3 input channels in the last axis"),
    ((2, 64, 64, 3), "built for 64x96 images, got 64x64"),
])
def test_bad_input_is_named(shape, message):
    model = swin_jax.create_model("vit_tiny_patch16_224", img_size=(64, 96))
    params = swin_jax.param_shapes(model)
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(model.apply, {"params": params}, jnp.zeros(shape))


@pytest.mark.parametrize("overrides, message", [
    (dict(img_size=(100, 96)), r"img_size \(100, 96\) is not a multiple of the patch size 16"),
    (dict(class_token=False), "global_pool='token' needs the class token"),
    (dict(global_pool="max"), "global_pool must be 'token' or 'avg'"),
])
def test_bad_config_is_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        swin_jax.create_model("vit_tiny_patch16_224", **overrides)
