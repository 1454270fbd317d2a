"""Swin V2 in every checkpoint layout, both ways, against the real libraries: timm (and its own
`checkpoint_filter_fn` for Microsoft's official files), transformers' Swinv2 and torchvision's
swin_v2. Parameters re-drawn at O(1) scale, outputs compared (1e-5 relative, fp32), exports
loaded back strictly. Also: V1 / V2 told apart in every layout, one clear error for a file of
the other family, `inspect`, loading at another window, and the command line.

The models are small and every map is divisible by the window at every stage: transformers and
torchvision pad before rolling the shifted windows, timm (and swin_jax) after, so only divisible
sizes compute the same there."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from cases import CUSTOM_V2_72x104, CUSTOM_V2_PRETRAINED, SWINV2
from conftest import FORWARD_TOL, nchw_to_nhwc, rel_diff, run_cli, timm_model
from safetensors.torch import load_file
from timm.models import swin_transformer_v2 as timm_v2
from torchvision.models import swin_transformer as tv_swin

import swin_jax
from swin_jax.checkpoint_info import describe, describe_file
from swin_jax.checkpoint_io import write_tensors
from swin_jax.convert import CheckpointFamilyError
from swin_jax.layouts import detect_family, detect_layout
from swin_torch_ref import randomize_parameters

SWIN = "swin_tiny_patch4_window7_224"
# 3 stages (two merges: layers.1/2.downsample move in the official, hf and torchvision layouts),
# maps 16, 8, 4 with window 4: shifted windows in stages 0 and 1, a whole-map window in stage 2
SMALL = dict(img_size=64, embed_dim=24, depths=(2, 2, 2), num_heads=(2, 2, 4), window_size=4, num_classes=10)
SMALL_PRETRAINED = dict(SMALL, pretrained_window_sizes=(6, 3, 2))  # coordinates scaled by other windows
SMALL_V1 = dict(img_size=64, embed_dim=24, depths=(2, 2), num_heads=(2, 4), window_size=4, num_classes=10)
V2_BUFFERS = r"(relative_coords_table|relative_position_index|attn_mask)$"

_FORWARDS: dict = {}


def _images(size=(64, 64), seed=0):
    return torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed))


def _ours(model, params, images, method=None):
    """swin_jax's output, one compiled program per config and method for the whole module."""
    key = (model.config, method)
    if key not in _FORWARDS:
        _FORWARDS[key] = jax.jit(lambda p, x: model.apply({"params": p}, x, method=method))
    return np.asarray(_FORWARDS[key](params, jnp.asarray(nchw_to_nhwc(images))))


def _torch(module, tensors):
    """`module` with `tensors` (numpy) loaded strictly, in eval mode."""
    module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in tensors.items()}, strict=True)
    return module.eval()


def _zeros(name, **overrides):
    """A model and params of zeros: enough for key and shape checks, with no compiling."""
    model = swin_jax.create_model(name, **overrides)
    return model, jax.tree.map(lambda s: np.zeros(s.shape, np.float32), swin_jax.param_shapes(model))


def _jax_model(overrides=SMALL, seed=4):
    """A V2 model and O(1) params, drawn by randomize_parameters' recipe on the torch side
    (drawing with jax.random compiles a program per shape: ten times slower here)."""
    model = swin_jax.create_model(SWINV2, **overrides)
    return model, swin_jax.from_torch(model, randomize_parameters(timm_model(SWINV2, **overrides), seed).state_dict())


def _compare(label, expected, ours, record):
    diff = record(label, rel_diff(expected, ours))
    assert diff <= FORWARD_TOL, f"{label}: {diff:.3e}"


# ----- timm


@pytest.mark.parametrize("overrides", [SMALL, CUSTOM_V2_72x104, CUSTOM_V2_PRETRAINED],
                         ids=["small", "custom72x104", "pretrained6-6-4-2"])
def test_timm_round_trip_is_bit_exact(overrides):
    theirs = randomize_parameters(timm_model(SWINV2, **overrides), seed=11)
    state = theirs.state_dict()
    assert detect_layout(list(state)) == "timm" and detect_family("timm", list(state)) == "swinv2"
    model = swin_jax.create_model(SWINV2, **overrides)
    back = swin_jax.to_torch(model, swin_jax.from_torch(model, state))
    assert set(back) == set(state)
    for key, tensor in state.items():
        assert back[key].dtype == np.float32 and back[key].shape == tuple(tensor.shape), key
        np.testing.assert_array_equal(back[key], tensor.numpy(), err_msg=key)


# ----- Microsoft's official Swin V2 (not on PyPI): timm's checkpoint_filter_fn reads it


def official_from_timm(state: dict, timm_v2_model) -> dict:
    """The official layout by its documented differences from timm: downsample at the end of
    stages, `head` instead of `head.fc`, and the persistent buffers of Microsoft's code
    (`relative_coords_table`, `relative_position_index`, `attn_mask` where a block shifts),
    here timm's own non-persistent copies of them; all under `model`."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        out[key.replace("head.fc.", "head.")] = value
    for key, buffer in timm_v2_model.named_buffers():
        if re.search(V2_BUFFERS, key):  # not timm's k_bias: Microsoft's code has none
            out[key] = buffer
    return {"model": out}


@pytest.mark.parametrize("overrides", [SMALL, SMALL_PRETRAINED], ids=["small", "pretrained6-3-2"])
def test_official_export_equals_documented_renames_and_timms_buffers(overrides):
    model, params = _zeros(SWINV2, **overrides)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
    ours = swin_jax.to_torch(model, params, "official")
    timm_state = {k: torch.from_numpy(v) for k, v in swin_jax.to_torch(model, params, "timm").items()}
    expected = official_from_timm(timm_state, timm_model(SWINV2, **overrides))["model"]
    assert set(ours) == set(expected)
    assert any(k.endswith("attn_mask") for k in ours) and "layers.1.downsample.reduction.weight" in ours
    for key, value in expected.items():
        assert ours[key].dtype == value.numpy().dtype, key
        np.testing.assert_array_equal(ours[key], value.numpy(), err_msg=key)


def test_official_export_loads_in_timm_through_its_checkpoint_filter(record):
    model, params = _jax_model(seed=5)
    state = {k: torch.from_numpy(v) for k, v in swin_jax.to_torch(model, params, "official").items()}
    assert detect_layout(list(state)) == "official"
    theirs = timm_model(SWINV2, **SMALL)
    theirs.load_state_dict(timm_v2.checkpoint_filter_fn({"model": state}, theirs), strict=True)
    images = _images(seed=1)
    with torch.no_grad():
        expected = theirs(images).numpy()
    _compare("layout official swinv2 export -> timm checkpoint_filter_fn", expected, _ours(model, params, images), record)


def test_official_import(tmp_path, record):
    theirs = randomize_parameters(timm_model(SWINV2, **SMALL), seed=6)
    path = tmp_path / "swinv2_small.pth"
    torch.save(official_from_timm(theirs.state_dict(), theirs), path)
    model = swin_jax.create_model(SWINV2, **SMALL)
    params = swin_jax.load_checkpoint(model, path)  # detected: official; buffers ignored
    images = _images(seed=2)
    with torch.no_grad():
        expected = theirs(images).numpy()
    _compare("layout official swinv2 import vs timm", expected, _ours(model, params, images), record)


# ----- transformers' Swinv2


def _hf_config(**kwargs):
    return transformers.Swinv2Config(image_size=64, patch_size=4, embed_dim=24, depths=[2, 2, 2],
                                     num_heads=[2, 2, 4], window_size=4, **kwargs)


def _hf_model(bare):
    if bare:
        hf = transformers.Swinv2Model(_hf_config()).eval()
        return hf, {**SMALL, "num_classes": 0}, lambda images: hf(pixel_values=images).pooler_output
    hf = transformers.Swinv2ForImageClassification(_hf_config(num_labels=10)).eval()
    return hf, SMALL, lambda images: hf(pixel_values=images).logits


@pytest.mark.parametrize("bare", [False, True], ids=["ForImageClassification", "Model-pooled"])
def test_hf_import(bare, record):
    hf, overrides, output = _hf_model(bare)
    randomize_parameters(hf, seed=3)
    state = hf.state_dict()
    assert not any(re.search(V2_BUFFERS, k) for k in state)  # transformers saves no buffers
    layout = "hf_model" if bare else "hf"
    assert detect_layout(list(state)) == layout and detect_family(layout, list(state)) == "swinv2"
    model = swin_jax.create_model(SWINV2, **overrides)
    params = swin_jax.from_torch(model, state)
    images = _images(seed=3)
    with torch.no_grad():
        expected = output(images).numpy()
    _compare(f"layout {layout} swinv2 import vs transformers", expected, _ours(model, params, images), record)


@pytest.mark.parametrize("bare", [False, True], ids=["ForImageClassification", "Model-pooled"])
def test_hf_export(bare, record):
    hf, overrides, output = _hf_model(bare)
    layout = "hf_model" if bare else "hf"
    model, params = _jax_model({**overrides}, seed=7)
    tensors = swin_jax.to_torch(model, params, layout)
    # transformers keeps the v4 names for Swinv2: the v4 layouts write the same file
    v4 = swin_jax.to_torch(model, params, layout.replace("hf", "hf_v4"))
    assert set(v4) == set(tensors) and all(np.array_equal(v4[k], tensors[k]) for k in tensors)
    _torch(hf, tensors)
    images = _images(seed=4)
    with torch.no_grad():
        expected = output(images).numpy()
    _compare(f"layout {layout} swinv2 export vs transformers", expected, _ours(model, params, images), record)


def test_hf_v4_file_loads_with_from_pretrained_and_round_trips(tmp_path, record):
    model, params = _jax_model(seed=8)
    config = _hf_config(num_labels=10)
    config.save_pretrained(tmp_path)
    write_tensors(swin_jax.to_torch(model, params, "hf_v4"), tmp_path / "model.safetensors")
    hf, info = transformers.Swinv2ForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    images = _images(seed=5)
    with torch.no_grad():
        expected = hf.eval()(pixel_values=images).logits.numpy()
    _compare("layout hf_v4 swinv2 export -> from_pretrained", expected, _ours(model, params, images), record)
    back = swin_jax.load_checkpoint(model, tmp_path / "model.safetensors")
    jax.tree.map(np.testing.assert_array_equal, back, params)


# ----- torchvision's swin_v2


def _tv_swin_v2():
    """torchvision's SwinTransformer with the V2 block and merging, as swin_v2_t builds it, at SMALL's size."""
    return tv_swin.SwinTransformer(patch_size=[4, 4], embed_dim=24, depths=[2, 2, 2], num_heads=[2, 2, 4],
                                   window_size=[4, 4], num_classes=10, block=tv_swin.SwinTransformerBlockV2,
                                   downsample_layer=tv_swin.PatchMergingV2).eval()


def test_torchvision_import_ignores_the_key_bias(record):
    theirs = randomize_parameters(_tv_swin_v2(), seed=9)
    state = theirs.state_dict()
    key_third = state["features.1.0.attn.qkv.bias"][24:48]
    assert key_third.abs().min() > 0  # torchvision zeroes it in every forward pass, so it must not matter
    assert detect_layout(list(state)) == "torchvision" and detect_family("torchvision", list(state)) == "swinv2"
    model = swin_jax.create_model(SWINV2, **SMALL)
    params = swin_jax.from_torch(model, state)
    np.testing.assert_array_equal(params["layers_0"]["blocks_0"]["attn"]["q_bias"],
                                  state["features.1.0.attn.qkv.bias"][:24].numpy())
    images = _images(seed=6)
    with torch.no_grad():
        expected = theirs(images).numpy()
    _compare("layout torchvision swinv2 import vs library", expected, _ours(model, params, images), record)


@pytest.mark.parametrize("overrides", [SMALL, SMALL_PRETRAINED], ids=["small", "pretrained6-3-2"])
def test_torchvision_export(overrides, record):
    """A strict load into a fresh torchvision model; with pre-training windows too, since
    torchvision computes its bias from the coordinate tables the file carries."""
    model, params = _jax_model(overrides, seed=10)
    tensors = swin_jax.to_torch(model, params, "torchvision")
    fresh = _tv_swin_v2()
    assert set(tensors) == set(fresh.state_dict())
    for i, depth in enumerate(model.config.depths):
        for j in range(depth):
            bias = tensors[f"features.{2 * i + 1}.{j}.attn.qkv.bias"]
            dim = bias.shape[0] // 3
            assert not bias[dim:2 * dim].any()  # the key third: zeros
            attn = params[f"layers_{i}"][f"blocks_{j}"]["attn"]
            np.testing.assert_array_equal(bias[:dim], attn["q_bias"])
            np.testing.assert_array_equal(bias[2 * dim:], attn["v_bias"])
    if overrides is SMALL:  # torchvision's own buffers, bit for bit
        for key, value in fresh.state_dict().items():
            if re.search(V2_BUFFERS, key):
                assert tensors[key].dtype == value.numpy().dtype, key
                np.testing.assert_array_equal(tensors[key], value.numpy(), err_msg=key)
    theirs = _torch(fresh, tensors)
    images = _images(seed=7)
    with torch.no_grad():
        expected = theirs(images).numpy()
    _compare("layout torchvision swinv2 export vs library", expected, _ours(model, params, images), record)


# ----- which family: V1 and V2 apart in every layout, and one clear error for the other one

SWIN_LAYOUTS = ["timm", "official", "torchvision", "hf", "hf_model", "hf_v4", "hf_v4_model"]


def _file(family, layout):
    """A zero-weight file of a small V1 or V2 model in `layout` (headless for the *_model layouts)."""
    name, overrides = (SWINV2, SMALL) if family == "swinv2" else (SWIN, SMALL_V1)
    if layout.endswith("_model"):
        overrides = {**overrides, "num_classes": 0}
    model, params = _zeros(name, **overrides)
    return swin_jax.to_torch(model, params, layout)


@pytest.mark.parametrize("layout", SWIN_LAYOUTS)
@pytest.mark.parametrize("family", ["swin", "swinv2"])
def test_layout_and_family_detected(family, layout):
    tensors = _file(family, layout)
    # Swinv2's v4 names are transformers 5's own: such files are detected as the v5 layouts
    expected = layout.replace("_v4", "") if family == "swinv2" else layout
    assert detect_layout(list(tensors)) == expected
    assert detect_family(expected, list(tensors)) == family
    assert describe(tensors).family == family


@pytest.mark.parametrize("layout", ["timm", "official", "torchvision", "hf", "hf_v4_model"])
@pytest.mark.parametrize("family", ["swin", "swinv2"])
def test_a_file_of_the_other_family_is_one_clear_error(family, layout):
    tensors = _file(family, layout)
    other = SWIN if family == "swinv2" else SWINV2
    overrides = {"num_classes": 0} if layout.endswith("_model") else {}
    model = swin_jax.create_model(other, **overrides)
    with pytest.raises(CheckpointFamilyError) as info:
        swin_jax.from_torch(model, tensors)
    message = str(info.value)
    names = {"swin": "Swin Transformer V1", "swinv2": "Swin Transformer V2"}
    assert message.startswith(f"the checkpoint holds a {names[family]} ({family} family, "), message
    assert f"load it into a {family} model such as {family}_" in message and "\n" not in message
    assert (info.value.found, info.value.expected) == (family, model.config.family)


# ----- inspect: what a V2 file records


def test_inspect_reads_window_pretrained_windows_and_size_from_saved_buffers():
    model, params = _zeros(SWINV2, **SMALL_PRETRAINED)
    info = describe(swin_jax.to_torch(model, params, "official"))
    assert (info.layout, info.family) == ("official", "swinv2")
    expected = dict(embed_dim=24, depths=(2, 2, 2), num_heads=(2, 2, 4), patch_size=4, in_chans=3, mlp_ratio=4.0,
                    num_classes=10, window_size=(4, 4), pretrained_window_sizes=(6, 3, 2), img_size=(64, 64))
    assert info.config == expected and info.guessed == ["img_size"] and not info.unrecorded
    torchvision = describe(swin_jax.to_torch(*_zeros(SWINV2, **SMALL), "torchvision"))  # tables, no masks
    assert torchvision.config["window_size"] == (4, 4) and "pretrained_window_sizes" not in torchvision.config
    assert list(torchvision.unrecorded) == ["img_size"]


def test_inspect_without_buffers_names_every_model_that_fits():
    model, params = _zeros(SWINV2)
    info = describe(swin_jax.to_torch(model, params, "timm"))
    assert info.config["depths"] == (2, 2, 6, 2) and info.config["num_heads"] == (3, 6, 12, 24)
    assert set(info.unrecorded) == {"window_size", "img_size"}
    assert info.matches == ["swinv2_tiny_window16_256", "swinv2_tiny_window8_256"]
    summary = info.summary()
    assert "family      swinv2 (Swin Transformer V2)" in summary
    assert "window_size not recorded: Swin V2's position bias is continuous" in summary


# ----- another window at load: the continuous position bias needs no resizing


@pytest.mark.parametrize("layout", ["timm", "official"])
def test_checkpoint_loads_at_another_window_as_timm(layout, record):
    """A window-4 checkpoint into a window-8 model whose coordinates are scaled by the window-4
    pre-training: equal to timm built the same way and loaded through its checkpoint_filter_fn
    (the official file's window-4 buffers are dropped on both sides)."""
    source = randomize_parameters(timm_model(SWINV2, **SMALL), seed=12)
    state = source.state_dict() if layout == "timm" else official_from_timm(source.state_dict(), source)["model"]
    wider = dict(SMALL, window_size=8, pretrained_window_sizes=(4, 4, 4))
    theirs = timm_model(SWINV2, **wider)
    theirs.load_state_dict(timm_v2.checkpoint_filter_fn(dict(state), theirs), strict=True)
    model = swin_jax.create_model(SWINV2, **wider)
    params = swin_jax.from_torch(model, state)
    assert model.config.block_window_shift(0, 1) == ((8, 8), (4, 4))
    images = _images(seed=8)
    with torch.no_grad():
        expected = theirs(images).numpy()
    _compare(f"swinv2 window 4 -> 8 ({layout} file) vs timm", expected, _ours(model, params, images), record)


# ----- the command line, on torchvision's swin_v2_t


@pytest.fixture(scope="module")
def swin_v2_t_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tv_v2")
    torch.save(randomize_parameters(tv_swin.swin_v2_t(), seed=13).state_dict(), folder / "swin_v2_t.pth")
    return folder


def test_cli_convert_inspect_and_parity(swin_v2_t_file):
    folder = swin_v2_t_file
    summary = describe_file(folder / "swin_v2_t.pth").summary()  # what `swin-jax inspect` prints, in process
    assert "layout      torchvision" in summary and "family      swinv2" in summary
    assert "window_size (8, 8)" in summary and "img_size    not recorded" in summary
    assert "matches     swinv2_tiny_window8_256" in summary

    official = folder / "swin_v2_t_official.safetensors"
    result = run_cli("swin-jax", "convert", folder / "swin_v2_t.pth", official, "--model", SWINV2,
                     "--layout", "official")
    assert result.returncode == 0, result.stderr
    assert "torchvision -> official" in result.stdout, result.stdout
    keys = set(load_file(official))
    assert {"layers.0.downsample.reduction.weight", "head.weight", "layers.0.blocks.1.attn_mask",
            "layers.0.blocks.0.attn.relative_coords_table"} <= keys

    result = run_cli("swin-jax", "inspect", official)
    assert result.returncode == 0, result.stderr
    assert "layout      official" in result.stdout and "family      swinv2" in result.stdout
    assert "img_size    (256, 256)  (guessed" in result.stdout
    assert "matches     swinv2_tiny_window8_256" in result.stdout

    result = run_cli("swin-jax", "parity", SWINV2, "--checkpoint", official, "--img-size", 64, 64,
                     "--reference", "timm")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(official layout)" in result.stdout and result.stdout.splitlines()[-1].startswith("PASS")


def test_cli_v2_file_into_a_v1_model(swin_v2_t_file, tmp_path):
    out = tmp_path / "out.msgpack"
    result = run_cli("swin-jax", "convert", swin_v2_t_file / "swin_v2_t.pth", out, "--model", SWIN)
    assert result.returncode == 2 and not out.exists()
    assert "error: the checkpoint holds a Swin Transformer V2 (swinv2 family, torchvision layout)" in result.stderr
    assert "missing" not in result.stderr and "Traceback" not in result.stderr
