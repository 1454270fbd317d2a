"""The ViT families of today's checkpoints (DeiT, DeiT III, DINOv2, CLIP, SigLIP): forward parity
vs swin_torch_ref and vs timm with every parameter at O(1) scale (logits and every block within
1e-5 * max(1, max|ref|)), the named models' parameters against timm's, and the options at work:
pos_embed resampling at load, dynamic image sizes, training steps."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from conftest import FORWARD_TOL, nchw_to_nhwc, rel_diff, timm_model
from timm.layers import resample_abs_pos_embed
from timm.models import vision_transformer as timm_vit

import swin_jax
import swin_torch_ref
from swin_jax.convert import TORCH_FROM_FLAX_AXES, canonical_key
from swin_jax.models import param_shapes
from swin_jax.parity import torch_outputs

SMALL = dict(img_size=(48, 64), embed_dim=64, depth=3, num_heads=4)
NEW_MODELS = [
    *(f"deit_{s}_patch16_224" for s in ("tiny", "small", "base")),
    *(f"deit_{s}_distilled_patch16_224" for s in ("tiny", "small", "base")),
    *(f"deit3_{s}_patch16_224" for s in ("small", "base", "large")),
    *(f"vit_{s}_patch14_dinov2" for s in ("small", "base", "large")),
    *(f"vit_{s}_patch14_reg4_dinov2" for s in ("small", "base", "large")),
    "vit_base_patch16_clip_224", "vit_base_patch32_clip_224", "vit_base_patch16_clip_quickgelu_224",
    "vit_large_patch14_clip_224", "vit_base_patch16_siglip_224", "vit_so400m_patch14_siglip_224",
]

TRACED_MODELS = ("deit_base_distilled_patch16_224", "deit3_large_patch16_224", "vit_large_patch14_reg4_dinov2",
                 "vit_large_patch14_clip_224", "vit_so400m_patch14_siglip_224")

# (id, model, overrides, input size or None for the config's): one model per option family
FAMILY_CASES = [
    # two prefix tokens with position-embedding rows, resampled at run time (64x48: 4x3 patches, not 3x4)
    pytest.param(("deit-distilled-dynamic", "deit_tiny_distilled_patch16_224", dict(SMALL, dynamic_img_size=True),
                  (64, 48)), id="deit-distilled-dynamic"),
    pytest.param(("deit3-layerscale-no_embed_class", "deit3_small_patch16_224", SMALL, None), id="deit3"),
    # trained at 42x56 (3x4 patches), fed 56x70 (4x5): the position embedding is resampled in the forward pass
    pytest.param(("dinov2-reg4-dynamic", "vit_small_patch14_reg4_dinov2",
                  dict(SMALL, img_size=(42, 56), dynamic_img_size=True, num_classes=10), (56, 70)),
                 id="dinov2-reg4-dynamic"),
    pytest.param(("dinov2-qk_norm-gelu_tanh", "vit_small_patch14_dinov2",
                  dict(SMALL, img_size=(42, 42), qk_norm=True, act_layer="gelu_tanh", num_classes=3), None),
                 id="dinov2-qknorm-gelu_tanh"),
    pytest.param(("clip-quickgelu-pre_norm", "vit_base_patch16_clip_quickgelu_224", SMALL, None), id="clip-quickgelu"),
    pytest.param(("siglip-map", "vit_base_patch16_siglip_224", dict(SMALL, num_classes=5), None), id="siglip-map"),
]


def timm_overrides(overrides: dict) -> dict:
    """Our overrides as timm's create_model takes them (the named models carry their eps)."""
    return {k: v for k, v in overrides.items() if k != "layer_norm_eps"}


@pytest.fixture(scope="module", params=FAMILY_CASES)
def family_case(request):
    case_id, name, overrides, size = request.param
    ref_model = swin_torch_ref.randomize_parameters(swin_torch_ref.create_model(name, **overrides), seed=11)
    model = swin_jax.create_model(name, **overrides)
    params = swin_jax.from_torch(model, ref_model.state_dict())
    images = torch.randn(2, 3, *(size or model.config.img_size), generator=torch.Generator().manual_seed(12))
    x = jnp.asarray(nchw_to_nhwc(images))
    inter = jax.jit(lambda p, x: model.apply({"params": p}, x, method="forward_intermediates"))(params, x)
    logits = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, x)
    return dict(id=case_id, name=name, overrides=overrides, ref_model=ref_model, model=model, params=params,
                images=images, intermediates=[np.asarray(i) for i in inter], logits=np.asarray(logits))


@pytest.mark.parametrize("reference", ["swin_torch_ref", "timm"])
def test_family_forward_parity(family_case, reference, record):
    c = family_case
    if reference == "timm":
        torch_model = timm_model(c["name"], **timm_overrides(c["overrides"]))
        torch_model.load_state_dict(c["ref_model"].state_dict(), strict=True)
    else:
        torch_model = c["ref_model"]
    ref_inter, ref_logits = torch_outputs(torch_model, c["images"], c["model"].config)
    assert len(ref_inter) == len(c["intermediates"]) == c["model"].config.depth
    label = f"vit family forward {c['id']} vs {reference}"
    for i, (r, o) in enumerate(zip(ref_inter, c["intermediates"], strict=True)):
        assert r.shape == o.shape, (i, r.shape, o.shape)
        diff = record(label, rel_diff(r, o))
        assert diff <= FORWARD_TOL, f"block {i}: {diff:.3e}"
    diff = record(label, rel_diff(ref_logits, c["logits"]))
    assert diff <= FORWARD_TOL, f"logits: {diff:.3e}"


def test_named_models_have_timms_parameters_and_outputs():
    """Every new named model at its full size: the same parameter names and shapes as timm's
    model of that name and `list_models` lists it; for the largest of each family (traced, not
    run) forward_intermediates gives every block's tokens and the model timm's output shape."""
    assert set(NEW_MODELS) <= set(swin_jax.list_models())
    for name in NEW_MODELS:
        with torch.device("meta"):
            theirs_model = timm_model(name)
            theirs = {k: tuple(v.shape) for k, v in theirs_model.state_dict().items()}
            out_shape = tuple(theirs_model(torch.empty(1, 3, *theirs_model.patch_embed.img_size)).shape)
        model = swin_jax.create_model(name)
        shapes = param_shapes(model)
        ours = {}
        for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
            names = tuple(p.key for p in path)
            axes = TORCH_FROM_FLAX_AXES.get((names[-1], len(leaf.shape)), tuple(range(len(leaf.shape))))
            ours[canonical_key(names)] = tuple(leaf.shape[a] for a in axes)
        assert ours == theirs, (name, set(ours) ^ set(theirs))
        if name not in TRACED_MODELS:
            continue
        cfg, x = model.config, swin_jax.models.dummy_input(model)
        blocks = jax.eval_shape(lambda p, x: model.apply({"params": p}, x, method="forward_intermediates"), shapes, x)
        assert [b.shape for b in blocks] == [(1, cfg.num_tokens, cfg.embed_dim)] * cfg.depth
        assert jax.eval_shape(lambda p, x: model.apply({"params": p}, x), shapes, x).shape == out_shape


# square sources: neither timm nor a checkpoint file records the grid it was made for
@pytest.mark.parametrize("name, overrides, new_size", [
    ("deit3_small_patch16_224", dict(SMALL, img_size=48), (64, 80)),  # no_embed_class: no prefix entries
    ("vit_small_patch14_reg4_dinov2", dict(SMALL, img_size=42), (70, 56)),  # registers, no_embed_class
    ("deit_tiny_distilled_patch16_224", dict(SMALL, img_size=48), (32, 96)),  # two prefix entries kept
], ids=["deit3", "dinov2-reg4", "deit-distilled"])
def test_pos_embed_resampled_at_load_equals_timm(name, overrides, new_size, record):
    """A checkpoint made at one size into a model of another: pos_embed equals timm's
    resample_abs_pos_embed with the prefix entries the option implies, and the logits equal
    timm's own model loaded through its checkpoint filter (which resamples it)."""
    source = swin_torch_ref.randomize_parameters(timm_model(name, **overrides), seed=13)
    state = source.state_dict()
    target_overrides = dict(overrides, img_size=new_size)
    model = swin_jax.create_model(name, **target_overrides)
    params = swin_jax.from_torch(model, state)
    expected = resample_abs_pos_embed(state["pos_embed"], new_size=model.config.patch_grid,
                                      num_prefix_tokens=model.config.pos_embed_prefix_tokens)
    assert record("vit family pos_embed resample vs timm", rel_diff(expected.numpy(), params["pos_embed"])) <= FORWARD_TOL
    target = timm_model(name, **target_overrides)
    target.load_state_dict(timm_vit.checkpoint_filter_fn(dict(state), target), strict=True)
    images = torch.randn(2, 3, *new_size, generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        theirs = target(images).numpy()
    ours = model.apply({"params": params}, jnp.asarray(nchw_to_nhwc(images)))
    assert record("vit family resampled model vs timm, logits", rel_diff(theirs, ours)) <= FORWARD_TOL


def test_dynamic_img_size_any_multiple_of_the_patch():
    """dynamic_img_size: the same jitted function takes several sizes (a compile per size), the
    config's size needs no resampling, and a size the patch does not divide is named."""
    model = swin_jax.create_model("vit_small_patch14_reg4_dinov2", **dict(SMALL, img_size=(42, 56)),
                                  dynamic_img_size=True, num_classes=4)
    params = swin_jax.init_params(model, 0)
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x, method="forward_features"))
    for size in ((42, 56), (28, 98), (70, 14)):
        tokens = forward(params, jnp.ones((1, *size, 3)))
        assert tokens.shape == (1, 5 + (size[0] // 14) * (size[1] // 14), 64)
    with pytest.raises(ValueError, match="not a multiple of the patch size 14"):
        model.apply({"params": params}, jnp.ones((1, 40, 56, 3)))
    fixed = swin_jax.create_model("vit_small_patch14_reg4_dinov2", **dict(SMALL, img_size=(42, 56)))
    with pytest.raises(ValueError, match="built for 42x56 images"):
        fixed.apply({"params": params}, jnp.ones((1, 28, 98, 3)))


@pytest.mark.parametrize("name", ["deit_tiny_distilled_patch16_224", "deit3_small_patch16_224",
                                  "vit_small_patch14_reg4_dinov2", "vit_base_patch16_clip_quickgelu_224",
                                  "vit_base_patch16_siglip_224"])
def test_training_steps_lower_the_loss(name):
    """A few AdamW steps in train mode (dropout and drop path on) on a fixed batch: the loss goes
    down and every parameter gets a finite, non-zero gradient (registers, LayerScale, distillation
    head, attention pool included)."""
    overrides = dict(SMALL, img_size=(28, 28) if "patch14" in name else (32, 32), num_classes=3,
                     drop_rate=0.1, drop_path_rate=0.1)
    model = swin_jax.create_model(name, **overrides)
    params = swin_jax.init_params(model, 0)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, *model.config.img_size, 3))
    labels = jnp.array([0, 1, 2, 1])
    tx = optax.adamw(1e-3)

    def loss_fn(p, key):
        logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def step(p, opt_state, key):
        loss, grads = jax.value_and_grad(loss_fn)(p, key)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss, grads

    opt_state, losses = tx.init(params), []
    for i in range(8):
        params, opt_state, loss, grads = step(params, opt_state, jax.random.PRNGKey(10 + i))
        losses.append(float(loss))
        if i == 0:
            for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
                assert np.isfinite(g).all() and np.abs(g).max() > 0, jax.tree_util.keystr(path)
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", ["deit3_small_patch16_224", "vit_base_patch16_siglip_224"])
def test_parity_check_of_family_models(name):
    """`swin-jax parity`'s check (the named model at a small image size, all its blocks) vs timm."""
    from swin_jax.parity import check_parity

    size = (28, 42) if "patch14" in name else (32, 48)
    report = check_parity(name, img_size=size, reference="timm", seed=3)
    assert report.passed, report.table()
    assert len(report.rows) == swin_jax.get_config(name).depth + 1


def test_parity_and_bench_commands_run_family_models(tmp_path):
    """The CLI: `swin-jax parity` on distilled DeiT vs timm, and `swin-jax bench` (forward and
    train step, swin_jax and timm) on a headless DINOv2, which trains with a 1000-class head."""
    import json

    from conftest import run_cli

    result = run_cli("swin-jax", "parity", "deit_tiny_distilled_patch16_224", "--img-size", "32", "32",
                     "--reference", "timm")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout and "block11" in result.stdout
    out = tmp_path / "bench.json"
    result = run_cli("swin-jax", "bench", "vit_small_patch14_dinov2", "--batch", "1", "--img-size", "28", "28",
                     "--train", "--repeats", "1", "--json", out)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert {(r["framework"], r["mode"]) for r in rows} == {
        (f, mode) for f in ("swin_jax", "timm eager") for mode in ("forward", "train")}, result.stdout
    assert all(r["img_per_s"] > 0 and r["gflop_per_img"] > 0 for r in rows)
