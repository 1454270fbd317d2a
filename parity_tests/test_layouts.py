"""Every checkpoint layout x {Swin, ViT} x {import, export}, checked against the real library:
parameters re-drawn at O(1) scale there, converted, outputs compared (1e-5 relative, fp32),
and exports loaded back strictly into the library."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
import transformers
from conftest import FORWARD_TOL, nchw_to_nhwc, randomize_jax_params, rel_diff, timm_model

import swin_jax
from swin_jax.checkpoint_io import write_tensors
from swin_jax.layouts import detect_layout
from swin_torch_ref import randomize_parameters

SWIN_T = "swin_tiny_patch4_window7_224"
VIT_T = "vit_tiny_patch16_224"
SMALL_VIT = dict(embed_dim=192, depth=4, num_heads=3)  # a 4-block ViT-Ti keeps the suite fast


def _images(channels=3, size=(224, 224), seed=0):
    return torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(seed))


def _ours(model, params, images, method=None):
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x, method=method))
    return np.asarray(apply(params, jnp.asarray(nchw_to_nhwc(images))))


def _strict_load(module, tensors):
    module.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    return module


def _check_import(layout, torch_model, name, overrides, record, torch_out=None, method=None):
    """torch model (O(1) weights) -> detected layout -> swin_jax: same outputs."""
    randomize_parameters(torch_model, seed=3)
    state = torch_model.state_dict()
    assert detect_layout(list(state)) == layout
    model = swin_jax.create_model(name, **overrides)
    params = swin_jax.from_torch(model, state)  # layout detected
    images = _images(model.config.in_chans, model.config.img_size)
    with torch.no_grad():
        expected = (torch_out or torch_model)(images)
    diff = rel_diff(expected.numpy(), _ours(model, params, images, method))
    assert record(f"layout {layout} {model.config.family} import vs library", diff) <= FORWARD_TOL
    return model, params


def _check_export(layout, fresh_torch_model, name, overrides, record, torch_out=None, method=None):
    """swin_jax (O(1) weights) -> layout -> strict load into the library: same outputs."""
    model = swin_jax.create_model(name, **overrides)
    params = randomize_jax_params(swin_jax.init_params(model, 0), seed=4)
    tensors = swin_jax.to_torch(model, params, layout)
    assert detect_layout(list(tensors)) == layout
    theirs = _strict_load(fresh_torch_model, tensors).eval()
    images = _images(model.config.in_chans, model.config.img_size, seed=1)
    with torch.no_grad():
        expected = (torch_out or theirs)(images)
    diff = rel_diff(expected.numpy(), _ours(model, params, images, method))
    assert record(f"layout {layout} {model.config.family} export vs library", diff) <= FORWARD_TOL


# ----- torchvision


@pytest.mark.parametrize("direction", ["import", "export"])
def test_torchvision_swin_t(direction, record):
    check = _check_import if direction == "import" else _check_export
    check("torchvision", torchvision.models.swin_t().eval(), SWIN_T, {}, record)


def _tv_vit(num_classes=1000):
    return torchvision.models.VisionTransformer(
        image_size=224, patch_size=16, num_layers=4, num_heads=3, hidden_dim=192, mlp_dim=768,
        num_classes=num_classes).eval()


@pytest.mark.parametrize("direction", ["import", "export"])
def test_torchvision_vit(direction, record):
    check = _check_import if direction == "import" else _check_export
    check("torchvision", _tv_vit(), VIT_T, SMALL_VIT, record)


@pytest.mark.slow
def test_torchvision_vit_b_16_named(record):
    _check_import("torchvision", torchvision.models.vit_b_16().eval(), "vit_base_patch16_224", {}, record)


# ----- Hugging Face transformers (v5 state_dicts)


def _hf_swin_config(**kwargs):
    return transformers.SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                                   image_size=224, **kwargs)


def _hf_vit_config(**kwargs):
    return transformers.ViTConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                                  intermediate_size=768, image_size=224, patch_size=16, **kwargs)


def _logits(hf_model):
    return lambda images: hf_model(pixel_values=images).logits


@pytest.mark.parametrize("direction", ["import", "export"])
def test_hf_swin_for_image_classification(direction, record):
    hf = transformers.SwinForImageClassification(_hf_swin_config(num_labels=1000)).eval()
    check = _check_import if direction == "import" else _check_export
    check("hf", hf, SWIN_T, {}, record, torch_out=_logits(hf))


@pytest.mark.parametrize("direction", ["import", "export"])
def test_hf_swin_model_pooled_features(direction, record):
    hf = transformers.SwinModel(_hf_swin_config()).eval()
    check = _check_import if direction == "import" else _check_export
    check("hf_model", hf, SWIN_T, {"num_classes": 0}, record,
          torch_out=lambda images: hf(pixel_values=images).pooler_output)


@pytest.mark.parametrize("direction", ["import", "export"])
def test_hf_vit_for_image_classification(direction, record):
    hf = transformers.ViTForImageClassification(_hf_vit_config(num_labels=10)).eval()
    check = _check_import if direction == "import" else _check_export
    # transformers' ViT configs use LayerNorm eps 1e-12
    check("hf", hf, VIT_T, {**SMALL_VIT, "num_classes": 10, "layer_norm_eps": 1e-12}, record, torch_out=_logits(hf))


def test_hf_vit_model_tokens_import_ignores_pooler(record):
    hf = transformers.ViTModel(_hf_vit_config()).eval()
    assert any(k.startswith("pooler.") for k in hf.state_dict())
    _check_import("hf_model", hf, VIT_T, {**SMALL_VIT, "num_classes": 0, "layer_norm_eps": 1e-12}, record,
                  torch_out=lambda images: hf(pixel_values=images).last_hidden_state, method="forward_features")


def test_hf_vit_model_tokens_export(record):
    hf = transformers.ViTModel(_hf_vit_config(), add_pooling_layer=False).eval()
    _check_export("hf_model", hf, VIT_T, {**SMALL_VIT, "num_classes": 0, "layer_norm_eps": 1e-12}, record,
                  torch_out=lambda images: hf(pixel_values=images).last_hidden_state, method="forward_features")


# ----- Hugging Face hub files (v4 names): transformers itself reads what we write


@pytest.mark.parametrize("family", ["swin", "vit"])
def test_hf_v4_files_load_in_transformers_and_round_trip(tmp_path, family, record):
    if family == "swin":
        name, overrides, cls, config = SWIN_T, {}, transformers.SwinForImageClassification, _hf_swin_config()
    else:
        name, overrides = VIT_T, {**SMALL_VIT, "layer_norm_eps": 1e-12}
        cls, config = transformers.ViTForImageClassification, _hf_vit_config()
    config.num_labels = 1000
    model = swin_jax.create_model(name, **overrides)
    params = randomize_jax_params(swin_jax.init_params(model, 0), seed=5)
    tensors = swin_jax.to_torch(model, params, "hf_v4")
    assert any(re.search(r"attention\.(self|attention)\.query\.weight$", k) for k in tensors)
    config.save_pretrained(tmp_path)
    write_tensors(tensors, tmp_path / "model.safetensors")
    hf, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    images = _images()
    with torch.no_grad():
        expected = hf.eval()(pixel_values=images).logits.numpy()
    assert record(f"layout hf_v4 {family} export -> from_pretrained", rel_diff(expected, _ours(model, params, images))) \
        <= FORWARD_TOL
    back = swin_jax.load_checkpoint(model, tmp_path / "model.safetensors")  # v4 layout detected
    jax.tree.map(np.testing.assert_array_equal, back, params)


# ----- Microsoft's official Swin (not on PyPI): built from timm by the documented renames


def official_from_timm(state: dict, ref_model) -> dict:
    """The official layout by its documented differences from timm: downsample at the end of
    stages 0-2, `head` instead of `head.fc`, buffers saved, all under `model`."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        out[key.replace("head.fc.", "head.")] = value
    for key, buffer in ref_model.named_buffers():  # relative_position_index, attn_mask
        out[key] = buffer
    return {"model": out}


def test_official_import(tmp_path, record):
    import swin_torch_ref

    theirs = randomize_parameters(timm_model(SWIN_T), seed=6)
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save(official_from_timm(theirs.state_dict(), swin_torch_ref.create_model(SWIN_T)), path)
    model = swin_jax.create_model(SWIN_T)
    params = swin_jax.load_checkpoint(model, path)  # detected: official
    images = _images()
    with torch.no_grad():
        expected = theirs(images).numpy()
    assert record("layout official swin import vs timm", rel_diff(expected, _ours(model, params, images))) <= FORWARD_TOL


def test_official_export_equals_documented_renames():
    import swin_torch_ref

    model = swin_jax.create_model(SWIN_T)
    params = randomize_jax_params(swin_jax.init_params(model, 0), seed=7)
    ours = swin_jax.to_torch(model, params, "official")
    timm_state = {k: torch.from_numpy(v) for k, v in swin_jax.to_torch(model, params, "timm").items()}
    expected = official_from_timm(timm_state, swin_torch_ref.create_model(SWIN_T))["model"]
    assert set(ours) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(ours[key], value.numpy(), err_msg=key)


@pytest.mark.parametrize("layout", ["official", "vit_jax", "big_vision"])
def test_family_only_layouts_refuse_the_other_family(layout):
    name = VIT_T if layout == "official" else SWIN_T
    model = swin_jax.create_model(name)
    with pytest.raises(ValueError, match=f"the {layout} layout holds (swin|vit) models, not"):
        swin_jax.to_torch(model, swin_jax.param_shapes(model), layout)


# ----- a checkpoint for another image / window size


@pytest.mark.parametrize("overrides", [dict(img_size=384, window_size=12), dict(img_size=256, window_size=8)],
                         ids=["224w7-to-384w12", "224w7-to-256w8"])
def test_swin_bias_tables_resized_as_timm(overrides, record):
    """A 224 / window-7 checkpoint into a model of another size and window: every relative
    position bias table equals timm's resize (its checkpoint filter), and so do the logits."""
    from timm.models import swin_transformer as timm_swin

    small = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4))
    state = randomize_parameters(timm_model(SWIN_T, **small), seed=8).state_dict()
    theirs = timm_model(SWIN_T, **small, **overrides)
    theirs.load_state_dict(timm_swin.checkpoint_filter_fn(dict(state), theirs), strict=True)
    model = swin_jax.create_model(SWIN_T, **small, **overrides)
    params = swin_jax.from_torch(model, state)
    ours = swin_jax.to_torch(model, params)
    for key, value in theirs.state_dict().items():
        if key.endswith("relative_position_bias_table"):
            assert record("swin bias table resize vs timm", rel_diff(value.numpy(), ours[key])) <= FORWARD_TOL
    images = _images(size=model.config.img_size)
    with torch.no_grad():
        expected = theirs(images).numpy()
    assert record("swin resized model vs timm, logits", rel_diff(expected, _ours(model, params, images))) \
        <= FORWARD_TOL
