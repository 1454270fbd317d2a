"""Window operations of swin_jax against swin_torch_ref's and timm's."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from timm.models import swin_transformer as timm_swin

import swin_torch_ref.swin as ref
from swin_jax import swin
from swin_jax.configs import get_config

WINDOWS = [(7, 7), (12, 12), (3, 5), (6, 4)]


@pytest.mark.parametrize("window", WINDOWS)
def test_relative_position_index(window):
    ours = swin.relative_position_index(window)
    np.testing.assert_array_equal(ours, ref.relative_position_index(window).numpy())
    np.testing.assert_array_equal(ours, timm_swin.get_relative_position_index(*window).numpy())
    wh, ww = window
    assert ours.min() == 0 and ours.max() == (2 * wh - 1) * (2 * ww - 1) - 1


def test_relative_position_index_7x7_facts():
    index = swin.relative_position_index((7, 7))
    assert index.shape == (49, 49) and index.max() == 168
    assert (np.diag(index) == 84).all()
    # i = token 7 (h=1, w=0), j = token 1 (h=0, w=1): h_i - h_j = +1, w_i - w_j = -1
    assert index[7, 1] == (1 + 6) * 13 + (-1 + 6)


@pytest.mark.parametrize("window", [(7, 7), (3, 5)])
def test_relative_position_bias_lookup(window):
    entries, heads = (2 * window[0] - 1) * (2 * window[1] - 1), 3
    table = np.random.default_rng(0).normal(size=(entries, heads)).astype(np.float32)
    ours = swin.relative_position_bias(jnp.asarray(table), swin.relative_position_index(window))
    attn = timm_swin.WindowAttention(dim=12, num_heads=heads, window_size=window)
    with torch.no_grad():
        attn.relative_position_bias_table.copy_(torch.from_numpy(table))
        theirs = attn._get_rel_pos_bias()[0].numpy()
    np.testing.assert_array_equal(np.asarray(ours), theirs)


# (feature map, window, shift): square, non-square map, non-square window, map not a window multiple
MASK_CASES = [((56, 56), (7, 7), (3, 3)), ((14, 21), (7, 7), (3, 3)), ((12, 20), (3, 5), (1, 2)),
              ((25, 33), (7, 7), (3, 3)), ((13, 7), (7, 7), (3, 0))]


@pytest.mark.parametrize("size, window, shift", MASK_CASES)
def test_shifted_window_mask(size, window, shift):
    padded = tuple(-(-s // w) * w for s, w in zip(size, window))
    ours = swin.shifted_window_mask(padded, window, shift)
    np.testing.assert_array_equal(ours, ref.shifted_window_mask(padded, window, shift).numpy())
    block = timm_swin.SwinTransformerBlock(dim=8, input_resolution=size, num_heads=2, window_size=window,
                                           shift_size=shift, always_partition=True)
    np.testing.assert_array_equal(ours, block.attn_mask.numpy())
    num_windows = (padded[0] // window[0]) * (padded[1] // window[1])
    assert ours.shape == (num_windows, window[0] * window[1], window[0] * window[1])
    assert set(np.unique(ours)) <= {0.0, -100.0}
    assert (ours[0] == 0).all()  # the top-left window holds one region only
    assert (ours[-1] == -100).any()  # the bottom-right window mixes wrapped regions


@pytest.mark.parametrize("shape, window", [((2, 14, 14, 3), (7, 7)), ((2, 12, 20, 5), (3, 5)), ((1, 8, 6, 2), (4, 2))])
def test_window_partition_and_reverse(shape, window):
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    ours = swin.window_partition(jnp.asarray(x), window)
    np.testing.assert_array_equal(np.asarray(ours), ref.window_partition(torch.from_numpy(x), window).numpy())
    np.testing.assert_array_equal(np.asarray(ours), timm_swin.window_partition(torch.from_numpy(x), window).numpy())
    back = swin.window_reverse(ours, window, shape[1], shape[2])
    np.testing.assert_array_equal(np.asarray(back), x)
    np.testing.assert_array_equal(
        np.asarray(back), timm_swin.window_reverse(torch.from_numpy(np.array(ours)), window, *shape[1:3]).numpy()
    )


def test_cyclic_shift_is_torch_roll():
    x = np.arange(2 * 5 * 7 * 3, dtype=np.float32).reshape(2, 5, 7, 3)
    ours = swin.cyclic_shift(jnp.asarray(x), (2, 3))
    np.testing.assert_array_equal(np.asarray(ours), torch.roll(torch.from_numpy(x), (-2, -3), (1, 2)).numpy())
    np.testing.assert_array_equal(np.asarray(swin.cyclic_shift(ours, (2, 3), reverse=True)), x)


@pytest.mark.parametrize("overrides", [
    {},
    dict(img_size=(200, 264), embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4)),
    dict(img_size=(60, 92), patch_size=2, window_size=(5, 7), embed_dim=24, depths=(2, 2, 2), num_heads=(2, 3, 4)),
])
def test_block_geometry_matches_timm(overrides):
    """Window and shift of every block (shrunk, unshifted where the map fits one window)."""
    import timm

    cfg = get_config("swin_tiny_patch4_window7_224", **overrides)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **overrides)
    for i, stage in enumerate(model.layers):
        for j, block in enumerate(stage.blocks):
            window, shift = cfg.block_window_shift(i, j)
            assert (window, shift) == (tuple(block.window_size), tuple(block.shift_size)), (i, j)
            assert cfg.stage_resolution(i) == tuple(block.input_resolution)
    if not overrides:
        assert cfg.block_window_shift(3, 1) == ((7, 7), (0, 0))  # Swin-T at 224 never shifts in stage 4


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_attention_core_backward_equals_autodiff(with_bias):
    """The written-out backward of attention_core equals JAX's derivative of the same forward
    (q, k, v and the per-window bias, summed over the batch it was broadcast to)."""
    from swin_jax.layers import attention_core

    groups, heads, n, d, outer = 4, 3, 10, 8, 2
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    q, k, v = (jax.random.normal(key, (outer * groups * heads, n, d)) for key in keys[:3])
    bias = jax.random.normal(keys[3], (groups, heads, n, n)) if with_bias else None
    cotangent = jax.random.normal(keys[4], q.shape)

    def reference(q, k, v, bias):
        scores = jnp.einsum("bnd,bmd->bnm", q, k)
        if bias is not None:
            scores = (scores.reshape(outer, groups, heads, n, n) + bias).reshape(scores.shape)
        return jnp.einsum("bnm,bmd->bnd", jax.nn.softmax(scores, axis=-1), v)

    with jax.default_matmul_precision("highest"):
        ours, ours_vjp = jax.vjp(attention_core, q, k, v, bias)
        ref, ref_vjp = jax.vjp(reference, q, k, v, bias)
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
        for name, got, want in zip("q k v bias".split(), ours_vjp(cotangent), ref_vjp(cotangent)):
            if want is None:
                assert got is None
                continue
            scale = float(jnp.abs(want).max())
            assert float(jnp.abs(got - want).max()) / scale < 1e-6, name


def _self_attention_unfused(qkv, heads):
    """swin_jax's attention_core path, whatever the backend's fused-attention setting."""
    from swin_jax import layers

    saved, layers.FUSED_ATTENTION_BY_BACKEND = layers.FUSED_ATTENTION_BY_BACKEND, {}
    try:
        return layers.self_attention(qkv, heads, None, None, True)
    finally:
        layers.FUSED_ATTENTION_BY_BACKEND = saved


@pytest.mark.parametrize("tokens", [17, 16], ids=["odd-padded", "even"])
def test_fused_self_attention_equals_attention_core(tokens):
    """The fused path (jax.nn.dot_product_attention; here its XLA implementation, on a GPU cuDNN's)
    gives what attention_core gives, values and qkv gradients, in fp32: an odd token count is
    padded by one, and an unmasked padded key would move every output (its score is 0)."""
    from swin_jax.layers import fused_self_attention

    heads, head_dim, batch = 2, 8, 3
    qkv = jax.random.normal(jax.random.PRNGKey(0), (batch, tokens, 3 * heads * head_dim))
    weights = jax.random.normal(jax.random.PRNGKey(1), (batch, tokens, heads * head_dim))
    with jax.default_matmul_precision("highest"):
        fused = lambda t: fused_self_attention(t, heads, "xla")
        want, want_grad = jax.value_and_grad(lambda t: (_self_attention_unfused(t, heads) * weights).sum())(qkv)
        got, got_grad = jax.value_and_grad(lambda t: (fused(t) * weights).sum())(qkv)
        np.testing.assert_allclose(fused(qkv), _self_attention_unfused(qkv, heads), rtol=1e-5, atol=1e-6)
    assert fused(qkv).shape == (batch, tokens, heads * head_dim)
    assert abs(float(got - want)) <= 1e-5 * float(jnp.abs(want))
    assert float(jnp.abs(got_grad - want_grad).max()) <= 1e-5 * float(jnp.abs(want_grad).max())
    from swin_jax.layers import cudnn_attention_available

    if not cudnn_attention_available():  # the implementation asked for is the one used
        with pytest.raises(Exception):
            fused_self_attention(qkv.astype(jnp.bfloat16), heads, "cudnn")


@pytest.mark.parametrize("tokens", [197, 17, 16])
def test_cudnn_attention_on_a_cuda_gpu(tokens):
    """On a CUDA GPU (Ampere on): cuDNN's kernel, bf16, against the fp32 computation, values and
    qkv gradients within bf16 rounding (measured 3.7e-3 and 4.2e-3 for ViT-B/16's shape on an
    H100, attention_core in bf16 5.1e-3 and 5.5e-3), gradients finite with the padded row."""
    from swin_jax.layers import cudnn_attention_available, fused_self_attention

    if not cudnn_attention_available():
        pytest.skip("needs a CUDA GPU with compute capability >= 8.0")
    heads, head_dim, batch = 4, 64, 2
    qkv = jax.random.normal(jax.random.PRNGKey(0), (batch, tokens, 3 * heads * head_dim))
    weights = jax.random.normal(jax.random.PRNGKey(1), (batch, tokens, heads * head_dim))
    loss = lambda f: lambda t: (f(t).astype(jnp.float32) * weights).sum()
    with jax.default_matmul_precision("highest"):
        want, want_grad = jax.value_and_grad(loss(lambda t: _self_attention_unfused(t, heads)))(qkv)
        want_out = _self_attention_unfused(qkv, heads)
    fused = lambda t: fused_self_attention(t, heads, "cudnn")
    bf16 = qkv.astype(jnp.bfloat16)
    out = jax.jit(fused)(bf16).astype(jnp.float32)
    grad = jax.jit(jax.grad(loss(fused)))(bf16).astype(jnp.float32)
    rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
    assert bool(jnp.isfinite(grad).all())
    assert rel(out, want_out) < 1e-2 and rel(grad, want_grad) < 1e-2, (rel(out, want_out), rel(grad, want_grad))


def test_self_attention_fuses_where_the_backend_table_says(monkeypatch):
    """Bias-free bf16/fp16 attention with an 8-multiple head dim takes the fused path on a backend
    listed in FUSED_ATTENTION_BY_BACKEND (GPUs); fp32, Swin's biased windows, active attention
    dropout and other backends keep attention_core. A bf16 ViT gives the same logits both ways."""
    import swin_jax
    from swin_jax import layers

    calls = []
    real = layers.fused_self_attention
    monkeypatch.setattr(layers, "fused_self_attention", lambda *a: calls.append(a[2]) or real(*a))
    monkeypatch.setattr(layers, "FUSED_ATTENTION_BY_BACKEND", {"gpu": "xla"})  # cuDNN needs a GPU
    qkv = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 3 * 2 * 8))
    bias = jnp.zeros((1, 2, 5, 5))
    cases = [("gpu", jnp.bfloat16, None, True, qkv, True), ("gpu", jnp.float16, None, True, qkv, True),
             ("gpu", jnp.float32, None, True, qkv, False), ("gpu", jnp.bfloat16, bias, True, qkv, False),
             ("gpu", jnp.bfloat16, None, False, qkv, False), ("cpu", jnp.bfloat16, None, True, qkv, False),
             ("gpu", jnp.bfloat16, None, True, qkv[..., :36], False),  # head dim 6
             ("gpu", jnp.bfloat16, None, True, jnp.zeros((2, 5, 3 * 2 * 136)), False)]  # head dim 136 > 128
    for backend, dtype, with_bias, deterministic, x, fused in cases:
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        calls.clear()
        out = layers.self_attention(x.astype(dtype), 2, with_bias, lambda p: p, deterministic)
        assert out.dtype == dtype and calls == (["xla"] if fused else []), (backend, dtype, with_bias, deterministic)

    # "gpu" is also ROCm's backend name: cuDNN only on a CUDA GPU of compute capability >= 8.0
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(layers, "FUSED_ATTENTION_BY_BACKEND", {"gpu": "cudnn"})
    monkeypatch.setattr(layers, "cudnn_attention_available", lambda: False)
    calls.clear()
    assert layers.self_attention(qkv.astype(jnp.bfloat16), 2, None, None, True).dtype == jnp.bfloat16
    assert calls == []

    monkeypatch.setattr(layers, "FUSED_ATTENTION_BY_BACKEND", {"gpu": "xla"})
    model = swin_jax.create_model("vit_tiny_patch16_224", img_size=(32, 32), dtype=jnp.bfloat16)
    params = swin_jax.init_params(model, 0)
    params = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(2), p.shape) * 0.5, params)
    images = jax.random.normal(jax.random.PRNGKey(3), (2, 32, 32, 3))
    calls.clear()
    fused_logits = model.apply({"params": params}, images).astype(jnp.float32)
    assert len(calls) == model.config.depth
    monkeypatch.setattr(layers, "FUSED_ATTENTION_BY_BACKEND", {})
    plain_logits = model.apply({"params": params}, images).astype(jnp.float32)
    rel = float(jnp.linalg.norm(fused_logits - plain_logits) / jnp.linalg.norm(plain_logits))
    assert rel < 2e-2, rel  # two bf16 computations of the same logits


@pytest.mark.parametrize("backend, primitive", [("cpu", "dot_general"), ("gpu", "optimization_barrier"),
                                                ("tpu", "dot_general")])
@pytest.mark.parametrize("shape", [(2, 7, 7, 96), (3, 5)], ids=["rows-of-16", "odd"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_materialize_cotangent_is_an_exact_identity(shape, dtype, backend, primitive, monkeypatch):
    """Forward and backward are the identity bit for bit (on the CPU the backward goes through a
    product with an identity matrix, which must not round; on GPUs through XLA's optimization
    barrier), under jit and in every dtype we train in."""
    from swin_jax.layers import materialize_cotangent

    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    x = jax.random.normal(jax.random.PRNGKey(0), shape).astype(dtype)
    g = (jax.random.normal(jax.random.PRNGKey(1), shape) * 1e3).astype(dtype)
    out, vjp = jax.jit(lambda x: jax.vjp(materialize_cotangent, x))(x)
    (grad,) = jax.jit(vjp)(g)
    assert primitive in str(jax.make_jaxpr(vjp)(g))
    assert out.dtype == grad.dtype == dtype
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(x, np.float32))
    np.testing.assert_array_equal(np.asarray(grad, np.float32), np.asarray(g, np.float32))


def _plain_mlp(x, w1, b1, w2, b2):
    """The MLP as autodiff sees it: nn.Dense, jax.nn.gelu (exact), nn.Dense."""
    hidden = jnp.einsum("...c,ch->...h", x, w1) + b1
    return jnp.einsum("...h,hc->...c", jax.nn.gelu(hidden, approximate=False), w2) + b2


def _mlp_args(c=12, h=40, lead=(2, 5, 7), seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    x = jax.random.normal(keys[0], (*lead, c))
    w1, w2 = jax.random.normal(keys[1], (c, h)) / c**0.5, jax.random.normal(keys[2], (h, c)) / h**0.5
    b1, b2 = jax.random.normal(keys[3], (h,)), jax.random.normal(keys[4], (c,))  # O(1): GELU's tails too
    return (x, w1, b1, w2, b2), jax.random.normal(keys[5], x.shape)


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_mlp_core_backward_equals_autodiff(backend, monkeypatch):
    """mlp_core re-computes the GELU and its derivative in the backward pass; its gradients
    (input, both kernels, both biases) equal JAX's derivative of the plain MLP (erfc form), with
    the GELU form of each backend (erf on GPUs), here computed on the CPU."""
    from swin_jax.layers import mlp_core

    monkeypatch.setattr(jax, "default_backend", lambda: backend)  # what swin_jax.layers.gelu asks
    args, cotangent = _mlp_args()
    with jax.default_matmul_precision("highest"):
        ours, ours_vjp = jax.jit(lambda *a: jax.vjp(mlp_core, *a))(*args)
        ref, ref_vjp = jax.vjp(_plain_mlp, *args)
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
        for name, got, want in zip("x w1 b1 w2 b2".split(), jax.jit(ours_vjp)(cotangent), ref_vjp(cotangent)):
            assert got.shape == want.shape, name
            scale = float(jnp.abs(want).max())
            assert float(jnp.abs(got - want).max()) / scale < 1e-6, name


def test_gelu_form_per_backend(monkeypatch):
    """GPUs get torch's erf form (faster there), other backends jax.nn.gelu's erfc form; the
    two agree to fp32 rounding over the GELU's whole range, tails included."""
    from swin_jax import layers

    x = jnp.linspace(-12.0, 12.0, 4001)
    primitives = {}
    for backend in ("cpu", "gpu", "tpu"):
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        jaxpr = str(jax.make_jaxpr(lambda x: (layers.gelu(x), layers.gelu_derivative(x)))(x))
        primitives[backend] = ("erfc" in jaxpr, "erf " in jaxpr or "erf[" in jaxpr)
    assert primitives == {"cpu": (True, False), "gpu": (False, True), "tpu": (True, False)}, primitives
    np.testing.assert_allclose(layers.gelu_erf(x), layers.gelu_erfc(x), rtol=1e-6, atol=1e-6)
    # relative accuracy against float64 on [-3, 3], in fp32 and bf16. fp32: the erf form's 1 + erf
    # cancels in the negative tail (as in torch): at x = -3 one fp32 ulp of 1 is 2e-5 of 0.0027.
    # bf16: correctly rounded (half an ulp, 2^-8), so computed in fp32 (in bf16, 1 + erf would
    # round to 0 below about -2.5, and the erfc form's error reaches 0.6%)
    exact = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
    for dtype, bound in ((jnp.float32, 1e-4), (jnp.bfloat16, 2.0**-8)):
        xs = jnp.linspace(-3.0, 3.0, 2001).astype(dtype)
        want = exact(np.asarray(xs, np.float64))
        for form in (layers.gelu_erf, layers.gelu_erfc):
            got = np.asarray(jax.jit(form)(xs), np.float64)
            assert form(xs).dtype == dtype
            rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-30)
            assert rel[np.abs(want) > 1e-6].max() <= bound, (form.__name__, dtype, rel.max())
    np.testing.assert_allclose(layers.gelu_erf_derivative(x), jax.vmap(jax.grad(layers.gelu_erf))(x),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layers.gelu_erfc_derivative(x), jax.vmap(jax.grad(layers.gelu_erfc))(x),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_mlp_core_bfloat16_gradients_keep_dtypes(backend, monkeypatch):
    from swin_jax.layers import mlp_core

    monkeypatch.setattr(jax, "default_backend", lambda: backend)  # each backend's GELU form
    args, cotangent = _mlp_args()
    args = tuple(a.astype(jnp.bfloat16) for a in args)
    out, vjp = jax.vjp(mlp_core, *args)
    grads = vjp(cotangent.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads)
    want = jax.vjp(_plain_mlp, *args)[1](cotangent.astype(jnp.bfloat16))
    for got, expected in zip(grads, want):  # bf16 keeps 8 bits: agree to a few of its ulps
        got, expected = np.asarray(got, np.float32), np.asarray(expected, np.float32)
        assert np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()


def test_mlp_core_keeps_less_for_the_backward_pass():
    """What the change is for: XLA's temporaries for the gradient of a stack of MLP blocks,
    against autodiff of the same MLP (which kept GELU output, erfc and exp terms alive from the
    forward pass on). Fails if XLA merges or hoists the backward's re-computation."""
    from swin_jax.layers import mlp_core

    (x, *_), _ = _mlp_args(c=64, h=256, lead=(8, 196))

    def stacked(core):
        def loss(weights, x):
            for w in weights:
                x = x + core(x, *w)
            return jnp.sum(x**2)
        return loss

    weights = [_mlp_args(c=64, h=256, lead=(1,), seed=i)[0][1:] for i in range(4)]
    temp = {name: jax.jit(jax.grad(stacked(core))).lower(weights, x).compile().memory_analysis().temp_size_in_bytes
            for name, core in (("ours", mlp_core), ("autodiff", _plain_mlp))}
    assert temp["ours"] < 0.7 * temp["autodiff"], temp


def test_not_before_is_exact():
    """The scheduling helper returns its input bit for bit (infinities included); only a row
    whose `other` starts with NaN comes out zero."""
    from swin_jax.layers import _not_before

    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 5)).at[0, 0, 0].set(jnp.inf)
    other = jnp.ones((3, 4, 2)).at[1, 2, 0].set(jnp.inf)
    np.testing.assert_array_equal(jax.jit(_not_before)(x, other), x)
    out = _not_before(x, other.at[2, 1, 0].set(jnp.nan))
    np.testing.assert_array_equal(out[2, 1], 0.0)
    np.testing.assert_array_equal(out.at[2, 1].set(x[2, 1]), x)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layer_norm_equals_flax_and_its_derivative(dtype):
    """Our LayerNorm computes flax's nn.LayerNorm(use_fast_variance=False) bit for bit, and its
    written-out backward equals autodiff of flax's (input, scale, bias), with O(1) scale/bias
    and a non-zero-mean input."""
    from swin_jax.layers import LayerNorm

    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = (3 * jax.random.normal(keys[0], (2, 5, 7, 24)) + 1.5).astype(dtype)
    params = {"scale": jax.random.normal(keys[1], (24,)), "bias": jax.random.normal(keys[2], (24,))}
    cotangent = jax.random.normal(keys[3], x.shape).astype(dtype)
    ours, theirs = LayerNorm(1e-5, dtype), nn.LayerNorm(1e-5, dtype=dtype, param_dtype=jnp.float32,
                                                      use_fast_variance=False)

    def run(module):
        return jax.jit(lambda p, x: jax.vjp(lambda p, x: module.apply({"params": p}, x), p, x))(params, x)

    (y, vjp), (y_ref, vjp_ref) = run(ours), run(theirs)
    assert y.dtype == y_ref.dtype == dtype
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_ref, np.float32))
    tol = 1e-6 if dtype == jnp.float32 else 1e-2
    for got, want in zip(jax.tree_util.tree_leaves(vjp(cotangent)), jax.tree_util.tree_leaves(vjp_ref(cotangent))):
        assert got.dtype == want.dtype
        got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
        assert np.abs(got - want).max() <= tol * np.abs(want).max()
