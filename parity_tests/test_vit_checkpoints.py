"""ViT checkpoints: Google's .npz layouts through timm's own npz loader, and position-embedding
resampling when a checkpoint's patch grid differs from the model's (timm's bicubic, antialiased)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FORWARD_TOL, nchw_to_nhwc, randomize_jax_params, rel_diff, run_cli, timm_model
from timm.layers import resample_abs_pos_embed
from timm.models import vision_transformer as timm_vit

import swin_jax
import swin_torch_ref
from swin_jax.checkpoint_io import read_state_dict, write_tensors
from swin_jax.convert import CheckpointMismatchError
from swin_jax.resample import resize_bicubic_antialias

VIT = "vit_tiny_patch16_224"
GAP = dict(global_pool="avg", fc_norm=False, class_token=False, num_classes=9)


def _jax_model(overrides, seed):
    model = swin_jax.create_model(VIT, **overrides)
    return model, randomize_jax_params(swin_jax.init_params(model, 0), seed=seed)


def _logits_pair(model, params, theirs, img_size):
    images = torch.randn(2, 3, *img_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = theirs(images).numpy()
    return expected, jax.jit(model.apply)({"params": params}, jnp.asarray(nchw_to_nhwc(images)))


@pytest.mark.parametrize("layout", ["vit_jax", "big_vision"])
@pytest.mark.parametrize("overrides", [{}, GAP], ids=["token", "gap-noclass"])
def test_npz_export_loads_in_timm_npz_loader(tmp_path, layout, overrides, record):
    model, params = _jax_model(overrides, seed=1)
    path = swin_jax.save_checkpoint(model, params, tmp_path / "vit.npz", layout=layout)
    theirs = timm_model(VIT, **overrides)
    timm_vit._load_weights(theirs, str(path))  # timm's reader of Google's checkpoints
    expected, ours = _logits_pair(model, params, theirs, (224, 224))
    assert record(f"vit npz ({layout}) export -> timm _load_weights, logits", rel_diff(expected, ours)) <= FORWARD_TOL


@pytest.mark.parametrize("layout", ["vit_jax", "big_vision"])
def test_npz_import_round_trip_is_bit_exact_and_detected(tmp_path, layout):
    model, params = _jax_model({}, seed=2)
    path = swin_jax.save_checkpoint(model, params, tmp_path / "vit.npz", layout=layout)
    keys = set(read_state_dict(path))
    assert ("params/cls" if layout == "big_vision" else "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel") in keys
    back = swin_jax.load_checkpoint(model, path)  # layout detected from the keys
    jax.tree.map(np.testing.assert_array_equal, back, params)


def test_msgpack_params_file_round_trip(tmp_path):
    from swin_jax.checkpoint_io import write_params

    model, params = _jax_model({}, seed=9)
    back = swin_jax.load_checkpoint(model, write_params(params, tmp_path / "vit.msgpack"))
    jax.tree.map(np.testing.assert_array_equal, back, params)


def test_npz_attention_kernels_have_google_shapes(tmp_path):
    model, params = _jax_model({}, seed=3)
    tensors = swin_jax.to_torch(model, params, layout="vit_jax")
    mha = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/"
    assert tensors[mha + "query/kernel"].shape == (192, 3, 64)
    assert tensors[mha + "value/bias"].shape == (3, 64)
    assert tensors[mha + "out/kernel"].shape == (3, 64, 192)
    assert tensors["embedding/kernel"].shape == (16, 16, 3, 192)


def test_npz_refuses_fc_norm_models():
    model, params = _jax_model(dict(global_pool="avg"), seed=4)  # timm's avg pool has fc_norm
    with pytest.raises(ValueError, match="vit_jax layout cannot hold fc_norm.(weight|bias): Google's ViT normalises the tokens"):
        swin_jax.to_torch(model, params, layout="vit_jax")


def test_safetensors_and_npz_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "w.safetensors"
    write_tensors({"a": np.ones(3, np.float32)}, target)
    before = target.read_bytes()

    def broken_save(*_args, **_kwargs):
        raise RuntimeError("disk full")

    import safetensors.numpy

    monkeypatch.setattr(safetensors.numpy, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        write_tensors({"a": np.zeros(3, np.float32)}, target)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_reading_npz_and_safetensors_needs_no_torch(tmp_path):
    write_tensors({"x": np.arange(4, dtype=np.float32)}, tmp_path / "a.npz")
    write_tensors({"x": np.arange(4, dtype=np.float32)}, tmp_path / "a.safetensors")
    code = ("import sys; sys.modules['torch'] = None\n"  # any torch import now fails
            "from swin_jax.checkpoint_io import read_state_dict\n"
            f"print(read_state_dict({str(tmp_path / 'a.npz')!r})['x'].sum(), "
            f"read_state_dict({str(tmp_path / 'a.safetensors')!r})['x'].sum())")
    result = run_cli("python", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["6.0", "6.0"]


# ----- position embedding resampling


@pytest.mark.parametrize("old, new", [((14, 14), (24, 24)), ((24, 24), (14, 14)), ((14, 14), (12, 20)), ((7, 7), (9, 5))])
def test_bicubic_antialias_matches_torch(old, new):
    x = np.random.default_rng(0).normal(size=(*old, 5)).astype(np.float32)
    theirs = F.interpolate(torch.from_numpy(x).permute(2, 0, 1)[None], size=new, mode="bicubic", antialias=True)
    ours = resize_bicubic_antialias(x, new)
    assert np.abs(ours - theirs[0].permute(1, 2, 0).numpy()).max() <= 1e-5


@pytest.mark.parametrize("overrides", [
    dict(img_size=384), dict(img_size=(224, 320)), dict(img_size=(96, 96)),
    dict(img_size=384, global_pool="avg", class_token=False),
], ids=["224to384", "224to224x320", "224to96", "224to384-noclass"])
def test_pos_embed_resampled_at_load_equals_timm(overrides, record):
    """A 224 timm checkpoint into a model of another grid: pos_embed equals timm's
    resample_abs_pos_embed, and the model equals timm's own model loaded through its filter."""
    source_overrides = {k: v for k, v in overrides.items() if k != "img_size"}
    source = swin_torch_ref.randomize_parameters(timm_model(VIT, **source_overrides), seed=6)
    state = source.state_dict()
    model = swin_jax.create_model(VIT, **overrides)
    params = swin_jax.from_torch(model, state)
    prefix = model.config.num_prefix_tokens
    expected = resample_abs_pos_embed(state["pos_embed"], new_size=model.config.patch_grid, num_prefix_tokens=prefix)
    assert record("vit pos_embed resample vs timm", rel_diff(expected.numpy(), params["pos_embed"])) <= FORWARD_TOL

    target = timm_model(VIT, **overrides)
    target.load_state_dict(timm_vit.checkpoint_filter_fn(dict(state), target), strict=True)
    theirs, ours = _logits_pair(model, params, target, model.config.img_size)
    assert record("vit resampled model vs timm checkpoint_filter_fn, logits", rel_diff(theirs, ours)) <= FORWARD_TOL


def test_resize_can_be_refused_and_then_names_the_key():
    state = swin_torch_ref.create_model(VIT).state_dict()
    model = swin_jax.create_model(VIT, img_size=384)
    with pytest.raises(CheckpointMismatchError, match=r"mis-shaped  pos_embed: checkpoint \(1, 197, 192\), "
                                                      r"model expects \(1, 577, 192\)"):
        swin_jax.from_torch(model, state, resize=False)
