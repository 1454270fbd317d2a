"""The ViT families of today's checkpoints in their libraries' layouts, both ways, against code we
did not write: transformers' Dinov2Model / Dinov2WithRegistersModel, CLIPVisionModel(WithProjection),
SiglipVisionModel / SiglipModel (their forward passes, strict loads and from_pretrained), and
timm's own converters of facebookresearch/dinov2 and OpenCLIP files (`checkpoint_filter_fn`).
Parameters re-drawn at O(1) scale, outputs compared (1e-5 relative, fp32). Also: detection,
`inspect`, and the one error that names a missing option (register tokens, LayerScale, ...).

Most tests run the conversion engine on a stand-in module whose parameters are timm's state_dict
keys and shapes (what swin_jax's ViT holds, under the same canonical names), and timm's model
computes; the tests at the end run swin_jax's Flax ViT itself. Tiny models: depth 2, width 64,
4 heads, 56 px images, patch 14."""
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from conftest import FORWARD_TOL, nchw_to_nhwc, rel_diff, run_cli, timm_model
from timm.models.vision_transformer import checkpoint_filter_fn

import swin_jax
from swin_jax.checkpoint_info import describe
from swin_jax.checkpoint_io import write_tensors
from swin_jax.configs import MODEL_CONFIGS, VitConfig
from swin_jax.convert import CheckpointMismatchError, from_torch, to_torch
from swin_jax.layouts import detect_family, detect_layout
from swin_torch_ref import randomize_parameters

TINY = dict(img_size=56, patch_size=14, embed_dim=64, depth=2, num_heads=4)
HF_TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14,
               attn_implementation="eager")
DINOV2, DINOV2_REG4 = "vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"
CLIP, SIGLIP = "vit_base_patch16_clip_224", "vit_base_patch16_siglip_224"
# timm options that match transformers' configs: activation from hidden_act, eps from layer_norm_eps
CLIP_TIMM = dict(act_layer="quick_gelu")  # CLIPVisionConfig: quick_gelu, eps 1e-5 (timm's CLIP names: 1e-5 too)
SIGLIP_TIMM = dict(act_layer="gelu_tanh")  # SiglipVisionConfig: gelu_pytorch_tanh, eps 1e-6


class TimmNamed(nn.Module):
    """A stand-in for swin_jax's ViT: parameters under timm's state_dict keys and shapes, which
    are the canonical names and shapes the converter gives every parameter (no kernel
    transposes: the leaves are named `weight`, not `kernel`)."""

    config: Any
    shapes: tuple

    @nn.compact
    def __call__(self, x):
        for key, shape in self.shapes:
            self.param(key, nn.initializers.zeros, shape)
        return x


def _timm_and_standin(name, seed=None, **options):
    """timm's model `name` at the tiny size with `options` (O(1) weights when `seed` is given),
    its state_dict as numpy, and a stand-in of swin_jax's config with the same options."""
    options = {**TINY, **options}
    theirs = timm_model(name, **options)
    if seed is not None:
        randomize_parameters(theirs, seed)
    state = {k: v.numpy().copy() for k, v in theirs.state_dict().items()}
    args = {**MODEL_CONFIGS[name][1], **options}
    args["num_classes"] = theirs.num_classes
    config = VitConfig(**args)
    return theirs, state, TimmNamed(config, tuple((k, v.shape) for k, v in state.items()))


def _load_timm(module, state):
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)  # copies: writable
    return module.eval()


def _strict(module, tensors):
    module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in tensors.items()}, strict=True)
    return module.eval()


def _images(seed=0, size=56):
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _compare(label, expected, ours, record):
    diff = record(label, rel_diff(np.asarray(expected), np.asarray(ours)))
    assert diff <= FORWARD_TOL, f"{label}: {diff:.3e}"


def _timm_outputs(theirs, images):
    """timm's normalised tokens and pooled features (before any classifier)."""
    with torch.no_grad():
        tokens = theirs.forward_features(images)
        return tokens.numpy(), theirs.forward_head(tokens, pre_logits=True).numpy(), theirs(images).numpy()


# ----- transformers: Dinov2Model and Dinov2WithRegistersModel


def _hf_dinov2(registers: int):
    if registers:
        config = transformers.Dinov2WithRegistersConfig(**HF_TINY, num_register_tokens=registers)
        return transformers.Dinov2WithRegistersModel(config).eval()
    return transformers.Dinov2Model(transformers.Dinov2Config(**HF_TINY)).eval()


@pytest.mark.parametrize("registers", [0, 4], ids=["dinov2", "dinov2-reg4"])
def test_hf_dinov2_import(registers, record):
    hf = randomize_parameters(_hf_dinov2(registers), seed=1)
    state = hf.state_dict()
    assert detect_layout(list(state)) == "hf_dinov2" and detect_family("hf_dinov2", list(state)) == "vit"
    theirs, _, standin = _timm_and_standin(DINOV2_REG4 if registers else DINOV2)
    canonical = from_torch(standin, state)  # layout detected; mask_token ignored
    _load_timm(theirs, canonical)
    images = _images()
    with torch.no_grad():
        expected = hf(pixel_values=images).last_hidden_state.numpy()  # layernorm(all tokens)
    tokens, _, _ = _timm_outputs(theirs, images)
    _compare(f"hf_dinov2 import (reg {registers}) vs Dinov2Model, tokens", expected, tokens, record)
    if registers:  # folded as timm folds it: the class token's position row added to the class token
        np.testing.assert_allclose(canonical["cls_token"], (state["embeddings.cls_token"] +
                                                            state["embeddings.position_embeddings"][:, :1]).numpy())


@pytest.mark.parametrize("registers", [0, 4], ids=["dinov2", "dinov2-reg4"])
def test_hf_dinov2_export_loads_strictly(registers, record):
    theirs, state, standin = _timm_and_standin(DINOV2_REG4 if registers else DINOV2, seed=2)
    tensors = to_torch(standin, state, "hf_dinov2")
    assert detect_layout(list(tensors)) == "hf_dinov2"
    assert not tensors["embeddings.mask_token"].any() and tensors["embeddings.mask_token"].shape == (1, 64)
    hf = _strict(_hf_dinov2(registers), tensors)
    images = _images(1)
    with torch.no_grad():
        expected = hf(pixel_values=images).last_hidden_state.numpy()
    _compare(f"hf_dinov2 export (reg {registers}) -> Dinov2Model, tokens", expected, _timm_outputs(theirs, images)[0],
             record)
    back = from_torch(standin, tensors)
    for key, value in state.items():  # cls + 0 row: bit-exact
        np.testing.assert_array_equal(back[key], value, err_msg=key)


@pytest.mark.parametrize("registers", [0, 4], ids=["dinov2", "dinov2-reg4"])
def test_hf_v4_dinov2_files_load_with_from_pretrained(tmp_path, registers, record):
    """The hub's files carry transformers v4 names; transformers renames them as it loads."""
    theirs, state, standin = _timm_and_standin(DINOV2_REG4 if registers else DINOV2, seed=3)
    tensors = to_torch(standin, state, "hf_v4_dinov2")
    assert "encoder.layer.0.attention.attention.query.weight" in tensors
    assert detect_layout(list(tensors)) == "hf_v4_dinov2"
    _hf_dinov2(registers).config.save_pretrained(tmp_path)
    write_tensors(tensors, tmp_path / "model.safetensors")
    cls = transformers.Dinov2WithRegistersModel if registers else transformers.Dinov2Model
    hf, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    images = _images(2)
    with torch.no_grad():
        expected = hf.eval()(pixel_values=images).last_hidden_state.numpy()
    _compare(f"hf_v4_dinov2 export (reg {registers}) -> from_pretrained, tokens", expected,
             _timm_outputs(theirs, images)[0], record)


# ----- transformers: CLIP's image tower


def _clip_config(hidden_act="quick_gelu", **kwargs):
    return transformers.CLIPVisionConfig(**HF_TINY, intermediate_size=256, hidden_act=hidden_act, **kwargs)


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_hf_clip_vision_both_ways(act, record):
    hf = randomize_parameters(transformers.CLIPVisionModel(_clip_config(act)).eval(), seed=4)
    state = hf.state_dict()
    assert detect_layout(list(state)) == "hf_clip_vision"
    theirs, _, standin = _timm_and_standin(CLIP, num_classes=0, act_layer=act)
    _load_timm(theirs, from_torch(standin, state))
    images = _images(3)
    with torch.no_grad():
        out = hf(pixel_values=images)
        tokens = hf.post_layernorm(out.last_hidden_state).numpy()  # its last_hidden_state is before the norm
    ours_tokens, ours_pooled, _ = _timm_outputs(theirs, images)
    _compare(f"hf_clip_vision import ({act}) vs CLIPVisionModel, pooler_output", out.pooler_output, ours_pooled,
             record)
    _compare(f"hf_clip_vision import ({act}) vs CLIPVisionModel, tokens", tokens, ours_tokens, record)

    theirs, source, standin = _timm_and_standin(CLIP, seed=5, num_classes=0, act_layer=act)
    hf = _strict(transformers.CLIPVisionModel(_clip_config(act)), to_torch(standin, source, "hf_clip_vision"))
    with torch.no_grad():
        expected = hf(pixel_values=images).pooler_output.numpy()
    _compare(f"hf_clip_vision export ({act}) -> CLIPVisionModel, pooler_output", expected,
             _timm_outputs(theirs, images)[1], record)


def test_hf_clip_with_projection_both_ways(record):
    """CLIPVisionModelWithProjection (and CLIPModel files): the bias-free visual_projection is
    timm's head with a zero bias."""
    config = _clip_config(projection_dim=32)
    hf = randomize_parameters(transformers.CLIPVisionModelWithProjection(config).eval(), seed=6)
    state = hf.state_dict()
    assert detect_layout(list(state)) == "hf_clip"
    theirs, _, standin = _timm_and_standin(CLIP, num_classes=32, **CLIP_TIMM)
    canonical = from_torch(standin, state)
    assert not np.asarray(canonical["head.bias"]).any()
    _load_timm(theirs, canonical)
    images = _images(4)
    with torch.no_grad():
        expected = hf(pixel_values=images).image_embeds.numpy()
    _compare("hf_clip import vs CLIPVisionModelWithProjection, image_embeds", expected,
             _timm_outputs(theirs, images)[2], record)

    theirs, source, standin = _timm_and_standin(CLIP, seed=7, num_classes=32, **CLIP_TIMM)
    with pytest.raises(ValueError, match="hf_clip layout cannot hold head.bias .*visual_projection has no bias"):
        to_torch(standin, source, "hf_clip")
    source["head.bias"][:] = 0
    _load_timm(theirs, source)
    hf = _strict(transformers.CLIPVisionModelWithProjection(config), to_torch(standin, source, "hf_clip"))
    with torch.no_grad():
        expected = hf(pixel_values=images).image_embeds.numpy()
    _compare("hf_clip export -> CLIPVisionModelWithProjection, image_embeds", expected,
             _timm_outputs(theirs, images)[2], record)


def _tiny_text(**kwargs):
    return dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, vocab_size=100,
                bos_token_id=0, eos_token_id=1, pad_token_id=1, **kwargs)


def test_hf_clip_model_file_ignores_the_text_tower(record):
    vision = {**HF_TINY, "intermediate_size": 256}
    vision.pop("attn_implementation")
    config = transformers.CLIPConfig(vision_config=vision, text_config=_tiny_text(), projection_dim=32,
                                     attn_implementation="eager")
    hf = randomize_parameters(transformers.CLIPModel(config).eval(), seed=8)
    state = dict(hf.state_dict())
    state["vision_model.embeddings.position_ids"] = torch.arange(17)[None]  # older hub files save the buffer
    assert any(k.startswith("text_model.") for k in state) and detect_layout(list(state)) == "hf_clip"
    theirs, _, standin = _timm_and_standin(CLIP, num_classes=32, **CLIP_TIMM)
    _load_timm(theirs, from_torch(standin, state))
    images = _images(5)
    with torch.no_grad():
        expected = hf.get_image_features(pixel_values=images).pooler_output.numpy()
    _compare("hf_clip import of a CLIPModel file vs get_image_features", expected, _timm_outputs(theirs, images)[2],
             record)


# ----- transformers: SigLIP's image tower


def _siglip_config():
    return transformers.SiglipVisionConfig(**HF_TINY, intermediate_size=256)


def test_hf_siglip_vision_both_ways(record):
    hf = randomize_parameters(transformers.SiglipVisionModel(_siglip_config()).eval(), seed=9)
    state = hf.state_dict()
    assert detect_layout(list(state)) == "hf_siglip_vision"
    theirs, _, standin = _timm_and_standin(SIGLIP, **SIGLIP_TIMM)
    canonical = from_torch(standin, state)
    in_proj = state["head.attention.in_proj_weight"].numpy()  # q first, then k and v: timm's q and kv
    np.testing.assert_array_equal(canonical["attn_pool.q.weight"], in_proj[:64])
    np.testing.assert_array_equal(canonical["attn_pool.kv.weight"], in_proj[64:])
    _load_timm(theirs, canonical)
    images = _images(6)
    with torch.no_grad():
        out = hf(pixel_values=images)
    tokens, pooled, _ = _timm_outputs(theirs, images)
    _compare("hf_siglip_vision import vs SiglipVisionModel, tokens", out.last_hidden_state, tokens, record)
    _compare("hf_siglip_vision import vs SiglipVisionModel, pooler_output", out.pooler_output, pooled, record)

    theirs, source, standin = _timm_and_standin(SIGLIP, seed=10, **SIGLIP_TIMM)
    tensors = to_torch(standin, source, "hf_siglip_vision")
    assert detect_layout(list(tensors)) == "hf_siglip_vision"
    hf = _strict(transformers.SiglipVisionModel(_siglip_config()), tensors)
    with torch.no_grad():
        expected = hf(pixel_values=images).pooler_output.numpy()
    _compare("hf_siglip_vision export -> SiglipVisionModel, pooler_output", expected,
             _timm_outputs(theirs, images)[1], record)


def test_hf_siglip_model_file_both_ways(record):
    vision = {**HF_TINY, "intermediate_size": 256}
    vision.pop("attn_implementation")
    config = transformers.SiglipConfig(vision_config=vision, text_config=_tiny_text(), attn_implementation="eager")
    hf = randomize_parameters(transformers.SiglipModel(config).eval(), seed=11)
    state = hf.state_dict()
    assert detect_layout(list(state)) == "hf_siglip"
    theirs, _, standin = _timm_and_standin(SIGLIP, **SIGLIP_TIMM)
    _load_timm(theirs, from_torch(standin, state))  # text tower, logit_scale and logit_bias ignored
    images = _images(7)
    with torch.no_grad():
        expected = hf.vision_model(pixel_values=images).pooler_output.numpy()
    _compare("hf_siglip import of a SiglipModel file vs its vision_model", expected, _timm_outputs(theirs, images)[1],
             record)

    theirs, source, standin = _timm_and_standin(SIGLIP, seed=12, **SIGLIP_TIMM)
    tensors = to_torch(standin, source, "hf_siglip")
    fresh = transformers.SiglipModel(config).eval()
    result = fresh.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(not k.startswith("vision_model.") for k in result.missing_keys)
    with torch.no_grad():
        expected = fresh.vision_model(pixel_values=images).pooler_output.numpy()
    _compare("hf_siglip export -> SiglipModel's vision_model", expected, _timm_outputs(theirs, images)[1], record)


# ----- facebookresearch/dinov2: timm's own converter (_convert_dinov2) is the reference


def dinov2_from_timm(state: dict, registers: bool, seed: int = 0) -> dict:
    """A facebookresearch/dinov2 state_dict, written from its documented differences to timm's:
    `register_tokens`, a `mask_token` (1, D), and a position embedding that always has the class
    token's row (here a random one, which the original code adds to the class token)."""
    rng = np.random.default_rng(seed)
    out = {("register_tokens" if k == "reg_token" else k): np.array(v) for k, v in state.items()}
    out["mask_token"] = rng.standard_normal((1, state["cls_token"].shape[-1])).astype(np.float32)
    if registers:
        row = rng.standard_normal(state["cls_token"].shape).astype(np.float32)
        out["pos_embed"] = np.concatenate([row, state["pos_embed"]], axis=1)
    return out


def _timm_filtered(state: dict, theirs) -> dict:
    """`state` as timm's checkpoint_filter_fn converts it for `theirs`, loaded strictly."""
    filtered = checkpoint_filter_fn({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, theirs)
    theirs.load_state_dict(filtered, strict=True)
    return {k: v.numpy() for k, v in theirs.state_dict().items()}


def assert_same_tensors(ours: dict, expected: dict) -> None:
    assert set(ours) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


@pytest.mark.parametrize("registers", [False, True], ids=["dinov2", "dinov2-reg4"])
def test_dinov2_original_import_equals_timm_converter(registers):
    theirs, state, standin = _timm_and_standin(DINOV2_REG4 if registers else DINOV2, seed=13)
    original = dinov2_from_timm(state, registers)
    assert detect_layout(list(original)) == "dinov2"
    expected = _timm_filtered(original, theirs)
    assert_same_tensors(from_torch(standin, original), expected)


@pytest.mark.parametrize("registers", [False, True], ids=["dinov2", "dinov2-reg4"])
def test_dinov2_original_export_through_timm_converter(registers):
    theirs, state, standin = _timm_and_standin(DINOV2_REG4 if registers else DINOV2, seed=14)
    tensors = to_torch(standin, state, "dinov2")
    assert detect_layout(list(tensors)) == "dinov2"
    assert not tensors["mask_token"].any() and tensors["mask_token"].shape == (1, 64)
    assert tensors["pos_embed"].shape == (1, 17, 64)  # 4x4 patches and the class token's row, in both
    if registers:
        assert "register_tokens" in tensors and not tensors["pos_embed"][:, 0].any()
        np.testing.assert_array_equal(tensors["cls_token"], state["cls_token"])
    for key, value in _timm_filtered(tensors, theirs).items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)


@pytest.mark.parametrize("registers", [False, True], ids=["dinov2", "dinov2-reg4"])
def test_dinov2_original_at_another_size_equals_timm_converter(registers, record):
    """A 56 px file (4x4 patches) into an 84 px model (6x6): the class row folded first, then the
    patches' rows resampled, as timm's checkpoint_filter_fn does."""
    name = DINOV2_REG4 if registers else DINOV2
    _, state, _ = _timm_and_standin(name, seed=17)
    original = dinov2_from_timm(state, registers)
    bigger, _, standin = _timm_and_standin(name, img_size=84)
    expected = _timm_filtered(original, bigger)
    ours = from_torch(standin, original)
    for key, value in expected.items():
        assert record("dinov2 file at another size vs timm's converter", rel_diff(value, ours[key])) <= FORWARD_TOL, key


@pytest.mark.parametrize("model", [CLIP, SIGLIP])
def test_hf_position_tables_resampled_as_timm(model, record):
    """transformers' CLIP / SigLIP position tables (no batch axis) into a model of another size:
    timm's resample_abs_pos_embed of the same table (CLIP's class row kept)."""
    from timm.layers import resample_abs_pos_embed

    if model == CLIP:
        hf, options = transformers.CLIPVisionModel(_clip_config()).eval(), dict(num_classes=0, **CLIP_TIMM)
    else:
        hf, options = transformers.SiglipVisionModel(_siglip_config()).eval(), SIGLIP_TIMM
    state = randomize_parameters(hf, seed=18).state_dict()
    _, _, standin = _timm_and_standin(model, img_size=84, **options)
    ours = from_torch(standin, state)
    table = state["embeddings.position_embedding.weight"][None]
    expected = resample_abs_pos_embed(table, new_size=(6, 6), num_prefix_tokens=int(model == CLIP))
    assert record("hf position table at another size vs timm", rel_diff(expected.numpy(), ours["pos_embed"])) \
        <= FORWARD_TOL


# ----- OpenCLIP / OpenAI CLIP: timm's own converter (_convert_openai_clip) is the reference

TEXT_TOWER = {"positional_embedding": (77, 32), "token_embedding.weight": (100, 32), "ln_final.weight": (32,),
              "transformer.resblocks.0.attn.in_proj_weight": (96, 32), "text_projection": (32, 32), "logit_scale": ()}


def openclip_from_timm(state: dict, seed: int = 0) -> dict:
    """An OpenCLIP state_dict written from OpenCLIP's names (the image tower under `visual.`, the
    text tower beside it) with timm's tensors: the class embedding a vector, the position
    embedding without the batch axis, `visual.proj` (D, out) and no bias."""
    top = {"patch_embed.proj.weight": "conv1.weight", "norm_pre.weight": "ln_pre.weight",
           "norm_pre.bias": "ln_pre.bias", "norm.weight": "ln_post.weight", "norm.bias": "ln_post.bias"}
    block = {"norm1": "ln_1", "norm2": "ln_2", "attn.qkv.weight": "attn.in_proj_weight",
             "attn.qkv.bias": "attn.in_proj_bias", "attn.proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc",
             "mlp.fc2": "mlp.c_proj"}
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if m:
            rest = next((new + m[2][len(old):] for old, new in block.items() if m[2].startswith(old)), m[2])
            out[f"visual.transformer.resblocks.{m[1]}.{rest}"] = value
        elif key == "cls_token":
            out["visual.class_embedding"] = value.reshape(-1)
        elif key == "pos_embed":
            out["visual.positional_embedding"] = value[0]
        elif key == "head.weight":
            out["visual.proj"] = value.T.copy()
        elif key != "head.bias":
            out["visual." + top[key]] = value
    rng = np.random.default_rng(seed)
    out.update({k: rng.standard_normal(s).astype(np.float32) for k, s in TEXT_TOWER.items()})
    return out


def test_openclip_import_equals_timm_converter():
    theirs, state, standin = _timm_and_standin(CLIP, seed=15, num_classes=32)
    state["head.bias"][:] = 0
    original = openclip_from_timm(state)
    assert "visual.transformer.resblocks.1.mlp.c_proj.weight" in original
    assert detect_layout(list(original)) == "openclip"
    expected = _timm_filtered(original, theirs)
    assert_same_tensors(from_torch(standin, original), expected)


def test_openclip_export_through_timm_converter(record):
    theirs, state, standin = _timm_and_standin(CLIP, seed=16, num_classes=32, **CLIP_TIMM)
    with pytest.raises(ValueError, match="openclip layout cannot hold head.bias .*visual.proj has no bias"):
        to_torch(standin, state, "openclip")
    state["head.bias"][:] = 0
    tensors = to_torch(standin, state, "openclip")
    assert tensors["visual.proj"].shape == (64, 32) and tensors["visual.class_embedding"].shape == (64,)
    assert "visual.conv1.bias" not in tensors and detect_layout(list(tensors)) == "openclip"
    for key, value in _timm_filtered(tensors, theirs).items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)


# ----- detection of every new layout, and what inspect reads from the tensors


def _zeros_state(name, **overrides):
    """A registered model's timm state_dict of zeros, its shapes from timm's model on the meta device."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in timm_model(name, **overrides).state_dict().items()}
    config = VitConfig(**{**MODEL_CONFIGS[name][1], **overrides})
    standin = TimmNamed(config, tuple(shapes.items()))
    return standin, {k: np.zeros(s, np.float32) for k, s in shapes.items()}


INSPECT_CASES = [
    # (registered model, overrides, layout, kind, options the tensors show, whether a registered model fits)
    (DINOV2_REG4, {}, "dinov2", "DINOv2 with 4 registers", dict(reg_tokens=4, no_embed_class=True), True),
    (DINOV2_REG4, {}, "hf_dinov2", "DINOv2 with 4 registers", dict(reg_tokens=4, no_embed_class=True), True),
    (DINOV2, {}, "hf_v4_dinov2", "DINOv2", dict(img_size=(518, 518), init_values=1e-5), True),
    (DINOV2_REG4, {}, "timm", "DINOv2 with 4 registers", dict(reg_tokens=4, no_embed_class=True), True),
    ("deit_tiny_distilled_patch16_224", {}, "timm", "DeiT distilled", dict(dist_token=True, num_classes=1000), True),
    ("deit3_small_patch16_224", {}, "timm", "DeiT III", dict(no_embed_class=True, init_values=1e-6), True),
    ("vit_base_patch16_clip_quickgelu_224", {}, "openclip", "CLIP image tower", dict(pre_norm=True, num_classes=512),
     True),
    (CLIP, {"num_classes": 0}, "hf_clip_vision", "CLIP image tower", dict(pre_norm=True), True),
    (SIGLIP, {}, "hf_siglip_vision", "SigLIP image tower", dict(global_pool="map", class_token=False), True),
    (SIGLIP, {"qk_norm": True}, "timm", "SigLIP image tower", dict(qk_norm=True, num_heads=12), False),
]


@pytest.mark.parametrize("name, overrides, layout, kind, options, registered", INSPECT_CASES,
                         ids=[f"{c[0]}-{c[2]}{'-qk_norm' if c[1].get('qk_norm') else ''}" for c in INSPECT_CASES])
def test_detect_and_inspect(name, overrides, layout, kind, options, registered):
    standin, state = _zeros_state(name, **overrides)
    tensors = to_torch(standin, state, layout)
    assert detect_layout(list(tensors)) == layout
    info = describe(tensors)
    assert info.layout == layout and info.family == "vit" and info.kind == kind
    for key, value in options.items():
        assert info.config.get(key) == value, (key, info.config)
    if "init_values" in MODEL_CONFIGS[name][1]:
        assert "init_values" in info.guessed
    assert (name in info.matches) if registered else not info.matches, info.matches

    def option_set(model):  # what the tensors tell apart: every model that matches has the same
        c = VitConfig(**MODEL_CONFIGS[model][1])
        return (c.reg_tokens, c.dist_token, c.no_embed_class, c.pre_norm, c.qk_norm, c.init_values is None,
                c.global_pool == "map", c.class_token)

    assert all(option_set(m) == option_set(name) for m in info.matches), info.matches
    assert f"kind        {kind}" in info.summary()


def test_a_plain_vit_file_matches_plain_vits_first():
    """DeiT's and ViT's plain models share an architecture; at the file's image size the ViT is
    named first (its image preparation is Google's), and no model with another option matches."""
    standin, state = _zeros_state("vit_tiny_patch16_224")
    for layout in ("timm", "hf"):
        info = describe(to_torch(standin, state, layout))
        assert info.kind == "" and "kind " not in info.summary()
        assert info.matches == ["vit_tiny_patch16_224", "deit_tiny_patch16_224", "vit_tiny_patch16_384"], info.matches


def test_inspect_command_line_names_the_family(tmp_path):
    standin, state = _zeros_state(DINOV2_REG4)
    write_tensors(to_torch(standin, state, "dinov2"), tmp_path / "dinov2_reg4.safetensors")
    result = run_cli("swin-jax", "inspect", tmp_path / "dinov2_reg4.safetensors")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "layout      dinov2" in out and "kind        DINOv2 with 4 registers" in out
    assert "reg_tokens  4" in out and "matches     vit_small_patch14_reg4_dinov2" in out


# ----- a checkpoint for a model with other options: one error that names the option


@pytest.mark.parametrize("layout", ["timm", "dinov2", "hf_dinov2"])
def test_register_tokens_missing_from_the_model(layout):
    _, state, standin = _timm_and_standin(DINOV2_REG4)
    tensors = to_torch(standin, state, layout)
    _, _, plain = _timm_and_standin(DINOV2_REG4, reg_tokens=0, no_embed_class=False)
    with pytest.raises(CheckpointMismatchError) as err:
        from_torch(plain, tensors, layout)
    first = str(err.value).splitlines()[0]
    assert re.fullmatch(r"the checkpoint has 4 register tokens \((reg_token|register_tokens|embeddings\.register_tokens)"
                        r" \(1, 4, 64\)\); the model has none: create it with reg_tokens=4", first), first


def test_register_tokens_missing_from_the_checkpoint():
    _, state, plain = _timm_and_standin(DINOV2)
    _, _, with_registers = _timm_and_standin(DINOV2_REG4)
    with pytest.raises(CheckpointMismatchError, match=r"^the model has 4 register tokens \(reg_token \(1, 4, 64\)\); "
                                                      r"the checkpoint has none: create it with reg_tokens=0"):
        from_torch(with_registers, to_torch(plain, state, "hf_dinov2"))


def test_register_count_differs():
    _, state, four = _timm_and_standin(DINOV2_REG4)
    _, _, two = _timm_and_standin(DINOV2_REG4, reg_tokens=2)
    with pytest.raises(CheckpointMismatchError, match=r"^the checkpoint has 4 register tokens \(reg_token \(1, 4, 64\)\); "
                                                      r"the model has 2 register tokens: create it with reg_tokens=4"):
        from_torch(two, state)


@pytest.mark.parametrize("source, target, overrides, hint", [
    # (timm drops None arguments: a model without LayerScale is another name)
    (DINOV2, "vit_small_patch16_224", dict(num_classes=0),
     r"the checkpoint has LayerScale .*create it with init_values=1e-5"),
    ("vit_small_patch16_224", DINOV2, dict(num_classes=1000),
     r"the model has LayerScale .*create it with init_values=None"),
    (CLIP, CLIP, dict(pre_norm=False), r"the checkpoint has a LayerNorm before the blocks .*create it with pre_norm=True"),
    ("deit_tiny_distilled_patch16_224", "deit_tiny_patch16_224", {},
     r"the checkpoint has a distillation token .*create it with dist_token=True"),
    ("deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", {},
     r"the model has a distillation token .*create it with dist_token=False"),
    (SIGLIP, SIGLIP, dict(global_pool="avg"),
     r"the checkpoint has an attention-pooling head .*create it with global_pool='map'"),
    ("deit3_small_patch16_224", "deit3_small_patch16_224", dict(no_embed_class=False),
     r"the checkpoint's pos_embed \(1, 16, 64\) covers the patches only.*no_embed_class=True"),
], ids=["layerscale", "no_layerscale", "pre_norm", "dist_token", "no_dist_token", "map", "no_embed_class"])
def test_other_options_named(source, target, overrides, hint):
    _, state, _ = _timm_and_standin(source)
    _, _, model = _timm_and_standin(target, **overrides)
    with pytest.raises(CheckpointMismatchError, match="^" + hint):
        from_torch(model, state)


# ----- swin_jax's Flax ViT: transformers -> swin_jax -> equal outputs -> export -> strict load


def _flax(name, **overrides):
    model = swin_jax.create_model(name, **TINY, **overrides)
    return model


def _ours(model, params, images, method=None):
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x, method=method))
    return np.asarray(apply(params, jnp.asarray(nchw_to_nhwc(images))))


def test_swin_jax_hf_dinov2_reg4_round_trip(record):
    hf = randomize_parameters(_hf_dinov2(4), seed=20)
    model = _flax(DINOV2_REG4)
    params = swin_jax.from_torch(model, hf.state_dict())
    images = _images(10)
    with torch.no_grad():
        expected = hf(pixel_values=images).last_hidden_state.numpy()
    _compare("swin_jax vs Dinov2WithRegistersModel, tokens", expected, _ours(model, params, images,
                                                                             "forward_features"), record)
    back = _strict(_hf_dinov2(4), swin_jax.to_torch(model, params, "hf_dinov2"))
    with torch.no_grad():
        _compare("swin_jax export -> Dinov2WithRegistersModel, tokens", back(pixel_values=images).last_hidden_state,
                 expected, record)


def test_swin_jax_hf_clip_round_trip(record):
    hf = randomize_parameters(transformers.CLIPVisionModel(_clip_config()).eval(), seed=21)
    model = _flax(CLIP, num_classes=0, **CLIP_TIMM)
    params = swin_jax.from_torch(model, hf.state_dict())
    images = _images(11)
    with torch.no_grad():
        expected = hf(pixel_values=images).pooler_output.numpy()
    _compare("swin_jax vs CLIPVisionModel, pooler_output", expected, _ours(model, params, images), record)
    back = _strict(transformers.CLIPVisionModel(_clip_config()), swin_jax.to_torch(model, params, "hf_clip_vision"))
    with torch.no_grad():
        _compare("swin_jax export -> CLIPVisionModel, pooler_output", back(pixel_values=images).pooler_output,
                 expected, record)


def test_swin_jax_hf_siglip_round_trip(record):
    hf = randomize_parameters(transformers.SiglipVisionModel(_siglip_config()).eval(), seed=22)
    model = _flax(SIGLIP, **SIGLIP_TIMM)
    params = swin_jax.from_torch(model, hf.state_dict())
    images = _images(12)
    with torch.no_grad():
        expected = hf(pixel_values=images).pooler_output.numpy()
    _compare("swin_jax vs SiglipVisionModel, pooler_output", expected, _ours(model, params, images), record)
    back = _strict(transformers.SiglipVisionModel(_siglip_config()), swin_jax.to_torch(model, params,
                                                                                        "hf_siglip_vision"))
    with torch.no_grad():
        _compare("swin_jax export -> SiglipVisionModel, pooler_output", back(pixel_values=images).pooler_output,
                 expected, record)


@pytest.mark.parametrize("layout", ["dinov2", "openclip"])
def test_swin_jax_original_layouts_through_timm_converter(layout, record):
    name, overrides = (DINOV2_REG4, {}) if layout == "dinov2" else (CLIP, dict(num_classes=32, **CLIP_TIMM))
    theirs, state, _ = _timm_and_standin(name, seed=23, **overrides)
    if "head.bias" in state:  # OpenCLIP's projection has no bias
        state["head.bias"][:] = 0
    model = _flax(name, **overrides)
    params = swin_jax.from_torch(model, state)  # timm's names
    tensors = swin_jax.to_torch(model, params, layout)
    assert detect_layout(list(tensors)) == layout
    _timm_filtered(tensors, theirs)
    images = _images(13)
    with torch.no_grad():
        expected = theirs(images).numpy()
    _compare(f"swin_jax {layout} export -> timm checkpoint_filter_fn, outputs", expected, _ours(model, params, images),
             record)
    back = swin_jax.from_torch(model, tensors)
    jax.tree.map(np.testing.assert_array_equal, back, params)


# transformers' activation names -> timm's act_layer
HF_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


@pytest.mark.parametrize("hf_config, name, options", [
    (lambda: transformers.Dinov2Config(**HF_TINY), DINOV2, {}),
    (lambda: transformers.Dinov2WithRegistersConfig(**HF_TINY), DINOV2_REG4, {}),
    (lambda: _clip_config(), CLIP, CLIP_TIMM),
    (lambda: _siglip_config(), SIGLIP, SIGLIP_TIMM),
], ids=["dinov2", "dinov2-reg4", "clip", "siglip"])
def test_timm_options_are_transformers_configs(hf_config, name, options):
    """The options these tests build timm's and our models with are what transformers' configs
    say: the activation (hidden_act) and LayerNorm eps (layer_norm_eps), as the named model or the
    options set them."""
    config = hf_config()
    ours = VitConfig(**{**MODEL_CONFIGS[name][1], **options})
    assert HF_ACTIVATIONS[config.hidden_act] == ours.act_layer
    assert config.layer_norm_eps == ours.layer_norm_eps


@pytest.mark.parametrize("name, options, layout, key", [
    (SIGLIP, {}, "hf", "attn_pool."),
    (DINOV2_REG4, dict(init_values=None), "hf", "reg_token"),
    (CLIP, dict(num_classes=0), "big_vision", "norm_pre."),
    (DINOV2, dict(qk_norm=True), "dinov2", "blocks.0.attn.k_norm."),
    (DINOV2, dict(init_values=None), "hf_siglip_vision", "cls_token"),
], ids=["siglip-to-hf", "registers-to-hf", "clip-to-big_vision", "qk_norm-to-dinov2", "class-token-to-siglip"])
def test_export_refuses_tensors_the_layout_cannot_hold(name, options, layout, key):
    """A model tensor that no rule of the layout names is an error naming it, not a key written
    under timm's name that the layout's library never reads."""
    model = swin_jax.create_model(name, **{**TINY, **options})
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), swin_jax.param_shapes(model))
    with pytest.raises(ValueError, match=f"the {layout} layout cannot hold {re.escape(key)}"):
        to_torch(model, params, layout)
