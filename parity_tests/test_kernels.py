"""The implementation seam (`swin_jax.Kernels`, `swin_jax.kernels`): every fast op against its
plain twin in `swin_jax.reference`, each choice reached through the model's setting, `auto`
decided by the platform a computation is placed on, and a new setting a new trace."""
import dataclasses
import math
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import swin_jax
from swin_jax import Kernels, backward, kernels, reference
from swin_jax.configs import KERNEL_CHOICES

from conftest import rel_diff, run_cli

VALUE_TOL, GRAD_TOL = 1e-6, 1e-5  # fast op against its plain twin: relative, per output
# XLA may compute a value in more precision than its program asks ("excess precision", on by
# default): it drops a bf16 rounding where a converted value meets a product, in one twin's
# program and not the other's. With it off each twin rounds where its formula says.
STRICT_FLAG = "--xla_allow_excess_precision=false"
STRICT = STRICT_FLAG in os.environ.get("XLA_FLAGS", "")


def _norm_rel(got, want) -> float:
    """||got - want|| / ||want|| in float64."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def _twins(fast, plain, args, cotangent):
    """Values and gradients (vjp with `cotangent`) of both twins, jitted."""
    run = lambda f: jax.jit(lambda *a: (lambda out, vjp: (out, vjp(cotangent)))(*jax.vjp(f, *a)))(*args)
    return run(fast), run(plain)


def _fraction_apart(got, want) -> float:
    """Two bfloat16 gradients: the fraction of elements that differ, after checking that none
    differs by more than bfloat16's resolution (2^-8) of the tensor's largest element."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    diff = np.abs(got - want).max()
    assert diff <= 2.0**-8 * np.abs(want).max(), f"{diff} is more than bfloat16's resolution"
    return float(np.mean(got != want))


def _check_twins(fast, plain, args, cotangent, names, dtype, rounding_alike: bool = True):
    """Values within 1e-6 and gradients within 1e-5 (relative, per tensor), in fp32 and bf16.

    In bf16 both twins compute each value in >= fp32 and round it once, where torch's autocast
    does (docs/NUMERICS.md), so the values are equal bit for bit. So is a bf16 gradient, except
    where two sums that agree to 1e-5 but were summed in another order (or another fusion) fall
    either side of a rounding boundary, in the result or in a rounded intermediate that feeds a
    product: isolated elements, each at most one bf16 step of the largest. That is checked with
    XLA rounding where each program says (STRICT, run by `test_bf16_twins_round_alike`): at most
    1% of a gradient's elements apart, where a rounding more on one side moves a third or more
    of them (the twins before both summed in >= fp32 differed in 32-97% of each gradient).

    With XLA's excess precision on (the default, what users run) XLA may drop a rounding of an
    intermediate in one twin's program only; then the fast gradient is checked to be no further
    from the fp32 computation than the plain one is, give or take bf16's resolution (2^-8). So is
    it where the fp32 sums themselves disagree beyond isolated elements (not `rounding_alike`:
    Swin V2's score scale up to 100 makes the softmax peaky, and its gradient, P dP - P rowsum(P
    dP), cancels: two fp32 orders of it then round to different bf16 values in up to 14% of q's
    gradient, measured, while agreeing to 1e-5 in fp32)."""
    (out, grads), (out_ref, grads_ref) = _twins(fast, plain, args, cotangent)
    assert out.dtype == out_ref.dtype
    if dtype == jnp.float32:
        assert rel_diff(out_ref, out, floor=0.0) <= VALUE_TOL
    else:
        np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(out_ref, np.float32))
    truth = None
    if dtype == jnp.bfloat16 and not (STRICT and rounding_alike):
        up = lambda t: t.astype(jnp.float32) if t is not None and jnp.issubdtype(t.dtype, jnp.floating) else t
        truth = _twins(plain, plain, tuple(up(a) for a in args), up(cotangent))[0][1]
    for i, (name, got, want) in enumerate(zip(names, grads, grads_ref, strict=True)):
        if want is None:  # an argument that was None (no bias)
            assert got is None, name
            continue
        assert got.dtype == want.dtype, name
        if got.dtype != jnp.bfloat16:  # fp32 gradients (fp32 parameters of a bf16 computation too)
            assert rel_diff(want, got, floor=0.0) <= GRAD_TOL, (name, rel_diff(want, got, floor=0.0))
        elif STRICT and rounding_alike:
            assert _fraction_apart(got, want) <= 0.01, (name, _fraction_apart(got, want))
        else:
            assert _norm_rel(got, truth[i]) <= _norm_rel(want, truth[i]) + 2.0**-8, name


def test_bf16_twins_round_alike():
    """The bf16 twin tests again in a process where XLA rounds where each program says (see
    `_check_twins`): at most 1% of a gradient's elements apart."""
    if STRICT:
        pytest.skip("this process is the strict one")
    flags = f"{os.environ.get('XLA_FLAGS', '')} {STRICT_FLAG}".strip()
    done = run_cli("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "twins and bf16",
                   env={"XLA_FLAGS": flags})
    assert done.returncode == 0, done.stdout[-3000:]
    assert re.search(r"\b18 passed", done.stdout), done.stdout[-500:]


DTYPES = pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])


SIZES = pytest.mark.parametrize("size", ["small", "window"])  # odd shapes; a Swin-T stage-1 window's


@DTYPES
@SIZES
def test_layer_norm_twins(dtype, size):
    shape = {"small": (2, 5, 7, 24), "window": (4, 14, 14, 96)}[size]
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = (3 * jax.random.normal(keys[0], shape) + 1.5).astype(dtype)
    scale, bias = jax.random.normal(keys[1], shape[-1:]), jax.random.normal(keys[2], shape[-1:])
    cotangent = jax.random.normal(keys[3], x.shape).astype(dtype)
    fast = lambda x, s, b: backward.layer_norm(x, s, b, 1e-5, x.dtype)
    plain = lambda x, s, b: reference.layer_norm(x, s, b, 1e-5, x.dtype)
    _check_twins(fast, plain, (x, scale, bias), cotangent, ("x", "scale", "bias"), dtype)


def _mlp_args(c=12, h=40, lead=(2, 5, 7), seed=0, dtype=jnp.float32):
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    x = jax.random.normal(keys[0], (*lead, c))
    w1, w2 = jax.random.normal(keys[1], (c, h)) / c**0.5, jax.random.normal(keys[2], (h, c)) / h**0.5
    b1, b2 = jax.random.normal(keys[3], (h,)), jax.random.normal(keys[4], (c,))  # O(1): GELU's tails too
    return tuple(a.astype(dtype) for a in (x, w1, b1, w2, b2)), jax.random.normal(keys[5], x.shape).astype(dtype)


@DTYPES
@SIZES
@pytest.mark.parametrize("form", ["erf", "erfc"])
@pytest.mark.parametrize("materialize", ["identity_matmul", "none"])
def test_mlp_twins(form, materialize, size, dtype):
    """mlp_core re-computes the GELU and its derivative in the backward pass."""
    gelu, derivative = kernels.GELU[form]
    args, cotangent = _mlp_args(dtype=dtype, **{"small": {}, "window": dict(c=96, h=384, lead=(4, 49))}[size])
    fast = lambda *a: backward.mlp_core(gelu, derivative, kernels.MATERIALIZE[materialize], *a)
    plain = lambda *a: reference.mlp(*a, gelu=gelu)
    _check_twins(fast, plain, args, cotangent, ("x", "w1", "b1", "w2", "b2"), dtype)


@DTYPES
@SIZES
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("with_scale", [False, True], ids=["", "scaled"])
def test_attention_core_twins(with_scale, with_bias, size, dtype):
    """The written-out softmax, bias and score-scale gradients (the bias summed over the batch
    it was broadcast to; the per-head scale of Swin V2's cosine attention over everything else)
    against autodiff of the same forward."""
    groups, heads, n, d, outer = {"small": (4, 3, 10, 8, 2), "window": (4, 3, 49, 32, 2)}[size]
    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    q, k, v = (jax.random.normal(key, (outer * groups * heads, n, d)).astype(dtype) for key in keys[:3])
    if with_scale:  # unit-length rows, as cosine attention feeds the core
        q, k = reference.l2_normalize(q), reference.l2_normalize(k)
    bias = jax.random.normal(keys[3], (groups, heads, n, n)) if with_bias else None
    scale = jnp.exp(jax.random.uniform(keys[5], (heads,), maxval=np.log(100.0))) if with_scale else None
    cotangent = jax.random.normal(keys[4], q.shape).astype(dtype)
    plain = lambda q, k, v, bias, scale: reference.attention(q, k, v, bias, scale=scale)
    _check_twins(backward.attention_core, plain, (q, k, v, bias, scale), cotangent,
                 ("q", "k", "v", "bias", "scale"), dtype, rounding_alike=not with_scale)


@pytest.mark.parametrize("tokens", [17, 16], ids=["odd-padded", "even"])
def test_fused_attention_twin(tokens):
    """The fused path (jax.nn.dot_product_attention, its XLA implementation; cuDNN's on a GPU) on
    a fused qkv against the plain formula, fp32: an odd token count is padded by one, and an
    unmasked padded key would move every output (its score is 0)."""
    heads, head_dim, batch = 2, 8, 3
    qkv = jax.random.normal(jax.random.PRNGKey(0), (batch, tokens, 3 * heads * head_dim))
    cotangent = jax.random.normal(jax.random.PRNGKey(1), (batch, tokens, heads * head_dim))
    fast = lambda t: kernels.fused_self_attention(t, heads, "jax")
    plain = lambda t: kernels.unfused_self_attention(t, heads, None, "autodiff")
    (out, (grad,)), (out_ref, (grad_ref,)) = _twins(fast, plain, (qkv,), cotangent)
    assert out.shape == (batch, tokens, heads * head_dim)
    assert rel_diff(out_ref, out, floor=0.0) <= VALUE_TOL and rel_diff(grad_ref, grad, floor=0.0) <= GRAD_TOL
    if not kernels.cudnn_attention_available():  # cuDNN is what was asked for, so it says it is missing
        with pytest.raises(RuntimeError, match="cuDNN"):
            kernels.fused_self_attention(qkv.astype(jnp.bfloat16), heads, "cudnn")


@pytest.mark.parametrize("tokens", [197, 17, 16])
def test_cudnn_attention_on_a_cuda_gpu(tokens):
    """On a CUDA GPU (Ampere on): cuDNN's kernel, bf16, against the fp32 computation, values and
    qkv gradients within bf16 rounding (measured 3.7e-3 and 4.2e-3 for ViT-B/16's shape on an
    H100, the custom_vjp core in bf16 5.1e-3 and 5.5e-3), gradients finite with the padded row."""
    if not kernels.cudnn_attention_available():
        pytest.skip("needs a CUDA GPU with compute capability >= 8.0")
    heads, head_dim, batch = 4, 64, 2
    qkv = jax.random.normal(jax.random.PRNGKey(0), (batch, tokens, 3 * heads * head_dim))
    weights = jax.random.normal(jax.random.PRNGKey(1), (batch, tokens, heads * head_dim))
    loss = lambda f: lambda t: (f(t).astype(jnp.float32) * weights).sum()
    plain = lambda t: kernels.unfused_self_attention(t, heads, None, "autodiff")
    with jax.default_matmul_precision("highest"):
        want_grad = jax.grad(loss(plain))(qkv)
        want_out = plain(qkv)
    fused = lambda t: kernels.fused_self_attention(t, heads, "cudnn")
    bf16 = qkv.astype(jnp.bfloat16)
    out = jax.jit(fused)(bf16).astype(jnp.float32)
    grad = jax.jit(jax.grad(loss(fused)))(bf16).astype(jnp.float32)
    assert bool(jnp.isfinite(grad).all())
    assert _norm_rel(out, want_out) < 1e-2 and _norm_rel(grad, want_grad) < 1e-2


@pytest.mark.parametrize("shape", [(2, 7, 7, 96), (3, 5)], ids=["rows-of-16", "odd"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("choice, primitive", [("auto", "dot_general"), ("identity_matmul", "dot_general"),
                                               ("barrier", "optimization_barrier"), ("none", None)])
def test_materialize_cotangent_is_an_exact_identity(shape, dtype, choice, primitive):
    """Forward and backward are the identity bit for bit, under jit and in every dtype we train
    in: the identity matmul must not round (on the CPU `auto` is that matmul), the barrier is
    XLA's, `none` adds nothing."""
    setting = Kernels(materialize=choice)
    x = jax.random.normal(jax.random.PRNGKey(0), shape).astype(dtype)
    g = (jax.random.normal(jax.random.PRNGKey(1), shape) * 1e3).astype(dtype)
    fn = lambda x: kernels.materialize_cotangent(x, setting)
    out, vjp = jax.jit(lambda x: jax.vjp(fn, x))(x)
    (grad,) = jax.jit(vjp)(g)
    backward_jaxpr = str(jax.make_jaxpr(vjp)(g))
    if primitive:
        assert primitive in backward_jaxpr
    else:
        assert "dot_general" not in backward_jaxpr and "optimization_barrier" not in backward_jaxpr
    assert out.dtype == grad.dtype == dtype
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(x, np.float32))
    np.testing.assert_array_equal(np.asarray(grad, np.float32), np.asarray(g, np.float32))


def test_gelu_forms():
    """The erf and erfc forms agree to fp32 rounding over the GELU's whole range, tails included;
    each is accurate against float64 in fp32 and bf16; the derivatives the MLP's backward uses
    are autodiff's; `auto` on the CPU is the erfc form."""
    x = jnp.linspace(-12.0, 12.0, 4001)
    np.testing.assert_allclose(reference.gelu_erf(x), reference.gelu_erfc(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(jax.jit(kernels.gelu_auto)(x), jax.jit(reference.gelu_erfc)(x))
    np.testing.assert_array_equal(jax.jit(kernels.gelu_auto_derivative)(x), jax.jit(backward.gelu_erfc_derivative)(x))
    # fp32: the erf form's 1 + erf cancels in the negative tail (as in torch): at x = -3 one fp32
    # ulp of 1 is 2e-5 of 0.0027. bf16: correctly rounded (half an ulp, 2^-8), so computed in
    # fp32 (in bf16, 1 + erf would round to 0 below about -2.5, the erfc form's error reach 0.6%)
    exact = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
    for dtype, bound in ((jnp.float32, 1e-4), (jnp.bfloat16, 2.0**-8)):
        xs = jnp.linspace(-3.0, 3.0, 2001).astype(dtype)
        want = exact(np.asarray(xs, np.float64))
        for form in (reference.gelu_erf, reference.gelu_erfc):
            got = np.asarray(jax.jit(form)(xs), np.float64)
            assert form(xs).dtype == dtype
            rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-30)
            assert rel[np.abs(want) > 1e-6].max() <= bound, (form.__name__, dtype, rel.max())
    for form, derivative in ((reference.gelu_erf, backward.gelu_erf_derivative),
                             (reference.gelu_erfc, backward.gelu_erfc_derivative)):
        np.testing.assert_allclose(derivative(x), jax.vmap(jax.grad(form))(x), rtol=1e-6, atol=1e-6)


# JAX's cuDNN attention, forward and backward: the custom calls a program running it holds
CUDNN_ATTENTION_CALLS = ("__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward")


def _exported(kernel_setting: Kernels, platform: str) -> str:
    """The StableHLO of a bf16 ViT's parameter gradient (2 blocks), lowered for `platform` on this
    machine. cuDNN's custom calls come with no serialization guarantee, so jax.export refuses them
    unless told: allowed here, where the program is only read."""
    model = swin_jax.create_model("vit_tiny_patch16_224", img_size=(32, 32), dtype=jnp.bfloat16, depth=2,
                                  kernels=kernel_setting)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)

    def grads(params, x):
        return jax.grad(lambda p: model.apply({"params": p}, x).astype(jnp.float32).sum())(params)

    allowed = [jax.export.DisabledSafetyCheck.custom_call(target) for target in CUDNN_ATTENTION_CALLS]
    return jax.export.export(jax.jit(grads), platforms=[platform], disabled_checks=allowed)(
        swin_jax.param_shapes(model), x).mlir_module()


def test_auto_follows_the_platform_the_computation_is_placed_on(monkeypatch):
    """One program, lowered for the CPU and for a CUDA GPU on this machine (whose default backend
    is the CPU: the same question a CPU computation on a GPU host asks): each gets its platform's
    choices, not the default backend's. The GPU's fused attention is simulated with JAX's XLA
    implementation (`attention_on_gpu="jax"`): cuDNN cannot even be traced without a GPU. The
    default setting (cuDNN on GPUs): where this process has a GPU cuDNN runs on, the CUDA program
    runs cuDNN's attention in every block; where it has none (or told it has none), no fused
    attention at all, the custom_vjp core."""
    setting = Kernels(attention_on_gpu="jax")
    cpu, gpu = _exported(setting, "cpu"), _exported(setting, "cuda")
    erf = lambda text: len(re.findall(r"chlo\.erf\b", text))
    assert "fused_attention_jax" in gpu and "fused_attention_jax" not in cpu  # attention
    assert erf(gpu) > 0 and erf(cpu) == 0  # GELU: erf form on GPUs only
    assert "optimization_barrier" in gpu and "optimization_barrier" not in cpu  # materialize
    count = lambda text, word: len(re.findall(rf"{re.escape(word)}\b", text))
    depth = 2  # _exported's blocks
    if kernels.cudnn_attention_available():
        gpu = _exported(Kernels(), "cuda")
        assert "fused_attention_cudnn" in gpu and "fused_attention_jax" not in gpu
        assert [count(gpu, f"@{target}") for target in CUDNN_ATTENTION_CALLS] == [depth, depth]  # fwd, bwd
        assert "fused_attention" not in _exported(Kernels(), "cpu")
        monkeypatch.setattr(kernels, "cudnn_attention_available", lambda: False)  # the other case, on this GPU
    # with no CUDA GPU cuDNN runs on, `auto` never traces cuDNN, whatever it is placed on: the
    # custom_vjp core's attention instead
    gpu = _exported(Kernels(), "cuda")
    assert "fused_attention" not in gpu and "cudnn" not in gpu.lower()
    assert "_attention_core_fwd" in gpu  # named in the program's locations


def test_a_new_setting_is_a_new_trace():
    """The setting is part of the model, so jit sees it: a function jitted with the model as a
    static argument traces again for another setting (a new cache entry) and runs that
    setting's implementation; the two give the same logits."""
    traces = []

    def logits(model, params, x):
        traces.append(model.config.kernels)
        return model.apply({"params": params}, x)

    apply = jax.jit(logits, static_argnums=0)
    first = swin_jax.create_model("vit_tiny_patch16_224", img_size=(32, 32), depth=2)
    params = swin_jax.init_params(first, 0)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    out_first = apply(first, params, x)
    apply(first, params, x)
    assert traces == [Kernels()]
    plain = Kernels(attention="autodiff", mlp="autodiff", layer_norm="autodiff", materialize="none")
    second = first.clone(config=dataclasses.replace(first.config, kernels=plain))
    out_second = apply(second, params, x)
    assert traces == [Kernels(), plain] and apply._cache_size() == 2
    jaxpr = lambda m: str(jax.make_jaxpr(lambda p: m.apply({"params": p}, x))(params))
    assert "custom_vjp_call" in jaxpr(first) and "custom_vjp_call" not in jaxpr(second)
    assert rel_diff(out_first, out_second, floor=0.0) <= VALUE_TOL


def test_self_attention_dispatch(monkeypatch):
    """Which implementation each setting runs: `cudnn` / `jax` only for bias-free bf16/fp16
    attention with a head size that is a multiple of 8 up to 128, without active dropout; the
    rest, and `auto` on this CPU-only machine, the custom_vjp core; `autodiff` no custom_vjp."""
    calls = []
    real = kernels.fused_self_attention
    monkeypatch.setattr(kernels, "fused_self_attention", lambda *a: calls.append(a[2]) or real(*a))
    qkv = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 3 * 2 * 8))
    bias = jnp.zeros((1, 2, 5, 5))
    bf16 = qkv.astype(jnp.bfloat16)
    cases = [(bf16, None, None, True), (qkv.astype(jnp.float16), None, None, True), (qkv, None, None, False),
             (bf16, bias, None, False), (bf16, None, lambda p: p * 1.0, False),
             (qkv[..., :36].astype(jnp.bfloat16), None, None, False),  # head size 6
             (jnp.zeros((2, 5, 3 * 2 * 136), jnp.bfloat16), None, None, False)]  # head size 136 > 128
    for choice in ("jax", "cudnn"):
        for x, b, dropout, fused in cases[2:] if choice == "cudnn" else cases:  # cuDNN: no GPU to run it
            calls.clear()
            out = kernels.self_attention(x, 2, b, Kernels(attention=choice), dropout)
            assert out.dtype == x.dtype and calls == ([choice] if fused else []), (choice, x.dtype, x.shape)
    calls.clear()
    core_jaxpr = lambda setting, x: str(jax.make_jaxpr(lambda t: kernels.self_attention(t, 2, None, setting))(x))
    assert "custom_vjp_call" in core_jaxpr(Kernels(), bf16) and not calls  # auto: no CUDA GPU here
    assert "custom_vjp_call" not in core_jaxpr(Kernels(attention="autodiff"), qkv)


@pytest.mark.parametrize("name, overrides", [
    ("swin_tiny_patch4_window7_224", dict(img_size=(64, 96), embed_dim=32, depths=(2, 2), num_heads=(2, 4),
                                          window_size=5, drop_path_rate=0.0)),
    ("vit_tiny_patch16_224", dict(img_size=(48, 64), depth=2)),
    ("swinv2_tiny_window8_256", dict(img_size=(64, 96), embed_dim=32, depths=(2, 2), num_heads=(2, 4),
                                     window_size=5, drop_path_rate=0.0)),
])
def test_models_with_plain_kernels_equal_the_fast_ones(name, overrides):
    """A whole model with every op plain (autodiff, no scheduling helpers) against the default
    kernels, O(1) weights, fp32: logits within 1e-6, every parameter's gradient within 1e-5."""
    plain = Kernels(attention="autodiff", mlp="autodiff", layer_norm="autodiff", materialize="none")
    fast_model = swin_jax.create_model(name, **overrides)
    plain_model = swin_jax.create_model(name, kernels=plain, **overrides)
    params = swin_jax.init_params(fast_model, 0)
    params = jax.tree.map(lambda p: p + 0.5 * jax.random.normal(jax.random.PRNGKey(p.size), p.shape), params)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, *fast_model.config.img_size, 3))

    def value_and_grads(model):
        loss = lambda p: jnp.mean(model.apply({"params": p}, x) ** 2)
        return jax.jit(lambda p: (model.apply({"params": p}, x), jax.grad(loss)(p)))(params)

    (out, grads), (out_ref, grads_ref) = value_and_grads(fast_model), value_and_grads(plain_model)
    assert rel_diff(out_ref, out, floor=0.0) <= VALUE_TOL
    for (path, got), want in zip(jax.tree_util.tree_flatten_with_path(grads)[0], jax.tree.leaves(grads_ref),
                               strict=True):
        assert rel_diff(want, got, floor=0.0) <= GRAD_TOL, jax.tree_util.keystr(path)


def test_mlp_core_keeps_less_for_the_backward_pass():
    """What the written-out MLP backward is for: XLA's temporaries for the gradient of a stack
    of MLP blocks, against autodiff of the same MLP (which kept GELU output, erfc and exp terms
    alive from the forward pass on). Fails if XLA merges or hoists the backward's re-computation."""
    (x, *_), _ = _mlp_args(c=64, h=256, lead=(8, 196))

    def stacked(setting):
        def loss(weights, x):
            for w in weights:
                x = x + kernels.mlp(x, *w, setting)
            return jnp.sum(x**2)
        return loss

    weights = [_mlp_args(c=64, h=256, lead=(1,), seed=i)[0][1:] for i in range(4)]
    temp = {choice: jax.jit(jax.grad(stacked(Kernels(mlp=choice)))).lower(weights, x).compile()
            .memory_analysis().temp_size_in_bytes for choice in KERNEL_CHOICES["mlp"]}
    assert temp["custom_vjp"] < 0.7 * temp["autodiff"], temp


def test_not_before_is_exact():
    """The scheduling helper returns its input bit for bit (infinities included); only a row
    whose `other` starts with NaN comes out zero."""
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 5)).at[0, 0, 0].set(jnp.inf)
    other = jnp.ones((3, 4, 2)).at[1, 2, 0].set(jnp.inf)
    np.testing.assert_array_equal(jax.jit(backward.not_before)(x, other), x)
    out = backward.not_before(x, other.at[2, 1, 0].set(jnp.nan))
    np.testing.assert_array_equal(out[2, 1], 0.0)
    np.testing.assert_array_equal(out.at[2, 1].set(x[2, 1]), x)


@pytest.mark.parametrize("choice", KERNEL_CHOICES["layer_norm"])
@DTYPES
def test_layer_norm_equals_flax_and_its_derivative(choice, dtype):
    """Our LayerNorm module computes flax's nn.LayerNorm(use_fast_variance=False) bit for bit
    with either kernel, and its gradient equals autodiff of flax's (input, scale, bias), with O(1)
    scale/bias and a non-zero-mean input (fp32 1e-6; bf16 within its rounding, 1e-2)."""
    from swin_jax.layers import LayerNorm

    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = (3 * jax.random.normal(keys[0], (2, 5, 7, 24)) + 1.5).astype(dtype)
    params = {"scale": jax.random.normal(keys[1], (24,)), "bias": jax.random.normal(keys[2], (24,))}
    cotangent = jax.random.normal(keys[3], x.shape).astype(dtype)
    ours = LayerNorm(1e-5, dtype, Kernels(layer_norm=choice))
    theirs = nn.LayerNorm(1e-5, dtype=dtype, param_dtype=jnp.float32, use_fast_variance=False)

    def run(module):
        return jax.jit(lambda p, x: jax.vjp(lambda p, x: module.apply({"params": p}, x), p, x))(params, x)

    (y, vjp), (y_ref, vjp_ref) = run(ours), run(theirs)
    assert y.dtype == y_ref.dtype == dtype
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_ref, np.float32))
    tol = 1e-6 if dtype == jnp.float32 else 1e-2
    for got, want in zip(jax.tree_util.tree_leaves(vjp(cotangent)), jax.tree_util.tree_leaves(vjp_ref(cotangent)),
                         strict=True):
        assert got.dtype == want.dtype
        assert rel_diff(want, got, floor=0.0) <= tol


def test_kernel_settings_are_checked():
    """A wrong choice or setting name is one clear error; a dict works where a Kernels does."""
    with pytest.raises(ValueError, match=r"kernels.attention must be one of .*'flash'"):
        Kernels(attention="flash")
    with pytest.raises(ValueError, match=r"unknown kernel setting\(s\) \['atention'\]"):
        swin_jax.create_model("vit_tiny_patch16_224", kernels={"atention": "autodiff"})
    model = swin_jax.create_model("vit_tiny_patch16_224", kernels={"attention": "autodiff"})
    assert model.config.kernels == Kernels(attention="autodiff") and hash(model.config)
