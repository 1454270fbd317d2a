"""Train mode (drop path, dropout), bf16 compute, jit, and bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import CUSTOM_200x264
from conftest import randomize_jax_params, rel_diff

import swin_jax

NAME = "swin_tiny_patch4_window7_224"
SMALL = dict(img_size=(40, 56), embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4, num_classes=5)


def _images(shape, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


@pytest.fixture(scope="module")
def drop_path_model():
    model = swin_jax.create_model(NAME, drop_path_rate=0.5, **SMALL)
    params = randomize_jax_params(swin_jax.init_params(model, 0), seed=1)
    apply = jax.jit(model.apply, static_argnames="train")
    return model, params, apply, _images((8, 40, 56, 3))


def test_drop_path_active_in_train_reproducible_and_off_in_eval(drop_path_model):
    _, params, apply, x = drop_path_model
    v = {"params": params}
    eval_out = apply(v, x)
    np.testing.assert_array_equal(eval_out, apply(v, x, train=False, rngs={"dropout": jax.random.PRNGKey(9)}))
    a = apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    b = apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    c = apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    np.testing.assert_array_equal(a, b)  # same key, same drops
    assert not np.allclose(a, c)  # another key, other drops
    assert not np.allclose(a, eval_out)  # drop path is on in train mode


def test_drop_path_drops_whole_samples_and_rescales():
    """timm's DropPath: each sample's branch is kept (scaled by 1/keep) or zeroed as a whole."""
    from swin_jax.layers import DropPath

    x = jnp.ones((256, 3, 4, 5))
    out = np.asarray(DropPath(0.25).apply({}, x, False, rngs={"dropout": jax.random.PRNGKey(0)}))
    per_sample = out.reshape(256, -1)
    assert ((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1)).all()
    kept = (per_sample[:, 0] > 0).mean()
    assert 0.65 < kept < 0.85
    np.testing.assert_array_equal(DropPath(0.25).apply({}, x, True), x)


def test_dropout_rate_in_head_is_active_in_train_only():
    model = swin_jax.create_model(NAME, drop_path_rate=0.0, drop_rate=0.5, **SMALL)
    params = randomize_jax_params(swin_jax.init_params(model, 0), seed=1)
    x = _images((2, 40, 56, 3))
    train = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.PRNGKey(0)})
    assert not np.allclose(train, model.apply({"params": params}, x))


def test_train_mode_needs_a_dropout_key(drop_path_model):
    _, params, apply, x = drop_path_model
    with pytest.raises(Exception, match="dropout"):
        apply({"params": params}, x, train=True)


@pytest.mark.parametrize("name", [NAME, "swinv2_tiny_window8_256"])
def test_bfloat16_compute_within_2e2_of_fp32(name, record):
    model = swin_jax.create_model(name)
    model_bf16 = swin_jax.create_model(name, dtype=jnp.bfloat16)
    params = randomize_jax_params(swin_jax.init_params(model, 0), seed=2)
    x = _images((2, *model.config.img_size, 3))
    ref = np.asarray(jax.jit(model.apply)({"params": params}, x))
    out = jax.jit(model_bf16.apply)({"params": params}, x)
    assert out.dtype == jnp.bfloat16
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(swin_jax.param_shapes(model_bf16)))
    family = model.config.family
    assert record(f"{family} bf16 vs fp32 logits (relative)", rel_diff(ref, out, floor=0)) <= 2e-2


def test_whole_model_compiles_under_jit():
    model = swin_jax.create_model(NAME, **CUSTOM_200x264)
    params = swin_jax.init_params(model)
    lowered = jax.jit(model.apply).lower({"params": params}, jnp.zeros((1, 200, 264, 3)))
    assert lowered.compile() is not None


@pytest.mark.parametrize("shape, dtype, message", [
    ((2, 3, 40, 56), jnp.float32, r"channels-first \(NCHW\).*transpose\(0, 2, 3, 1\)"),
    ((2, 40, 56, 4), jnp.float32, r"expected 3 input channels in the last axis \(NHWC\), got 4"),
    ((2, 40, 48, 3), jnp.float32, r"built for 40x56 images, got 40x48; create it with img_size=\(40, 48\)"),
    ((40, 56, 3), jnp.float32, r"expected a batch of NHWC images \(B, H, W, 3\), got an array of shape \(40, 56, 3\)"),
    ((2, 40, 56, 3), jnp.uint8, r"expected float images, got dtype uint8"),
])
def test_bad_input_is_named(drop_path_model, shape, dtype, message):
    model, params, _, _ = drop_path_model
    with pytest.raises(ValueError, match=message):
        model.apply({"params": params}, jnp.zeros(shape, dtype))


def test_unknown_model_and_option_are_named():
    with pytest.raises(ValueError, match="unknown model 'swin_tinny'"):
        swin_jax.create_model("swin_tinny")
    with pytest.raises(TypeError, match=r"has no option\(s\) \['windowsize'\]"):
        swin_jax.create_model(NAME, windowsize=8)


@pytest.mark.parametrize("option", ["attn_drop_rate", "proj_drop_rate"])
@pytest.mark.parametrize("name", [NAME, "swinv2_tiny_window8_256", "vit_tiny_patch16_224"])
def test_dropout_takes_the_autodiff_path(name, option):
    """With attention dropout (attn_drop_rate) or projection/MLP dropout (proj_drop_rate) > 0,
    train mode drops (keyed by the dropout rng) and still differentiates; at 0, train mode runs
    the written-out attention and MLP backward passes and equals eval mode, values and gradients."""
    size = dict(img_size=(40, 56), embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4) \
        if name.startswith("swin") else dict(img_size=(32, 48), embed_dim=16, depth=2, num_heads=2)
    x = _images((2, *size["img_size"], 3))
    for rate in (0.3, 0.0):
        model = swin_jax.create_model(name, **{option: rate}, drop_path_rate=0.0, num_classes=5, **size)
        params = randomize_jax_params(swin_jax.init_params(model, 0), seed=1)

        def loss(p, train, key):
            return (model.apply({"params": p}, x, train=train, rngs={"dropout": key}) ** 2).mean()

        grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
        eval_value, eval_grads = grad(params, False, jax.random.PRNGKey(0))
        values = [grad(params, True, jax.random.PRNGKey(k)) for k in (1, 1, 2)]
        assert float(values[0][0]) == float(values[1][0])  # the same key, the same draw
        assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(values[0][1]))
        if rate:
            assert float(values[0][0]) != float(values[2][0]) and float(values[0][0]) != float(eval_value)
        else:
            np.testing.assert_allclose(float(values[2][0]), float(eval_value), rtol=1e-6)
            for a, b in zip(jax.tree_util.tree_leaves(values[2][1]), jax.tree_util.tree_leaves(eval_grads), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
