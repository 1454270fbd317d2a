"""ViT-only checks: train mode, bf16, bad input and bad configs (the forward cases are in cases.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import randomize_jax_params, rel_diff

import swin_jax


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
    assert rel_diff(ref, out, floor=0) <= 2e-2


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
    (dict(global_pool="max"), "global_pool must be 'token', 'avg' or 'map'"),
    (dict(act_layer="relu"), "act_layer must be one of"),
    (dict(dist_token=True, reg_tokens=4), "dist_token and reg_tokens do not combine"),
    (dict(dist_token=True, global_pool="avg"), "dist_token needs the class token"),
    (dict(global_pool="map", fc_norm=True), "fc_norm must be None or False"),
])
def test_bad_config_is_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        swin_jax.create_model("vit_tiny_patch16_224", **overrides)
