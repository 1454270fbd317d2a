"""timm-layout conversion both ways, and errors that name every bad key."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from cases import AVG_NO_CLASS, CUSTOM_200x264
from conftest import FORWARD_TOL, nchw_to_nhwc, randomize_jax_params, rel_diff, timm_model

import swin_jax
import swin_torch_ref
from swin_jax.convert import CheckpointMismatchError
from swin_jax.layouts import to_numpy

NAME = "swin_tiny_patch4_window7_224"


@pytest.fixture(scope="module")
def timm_tiny():
    return swin_torch_ref.randomize_parameters(timm_model(NAME), seed=11)


@pytest.mark.parametrize("name", [NAME, "vit_small_patch16_224"])
def test_round_trip_is_bit_exact(name):
    theirs = swin_torch_ref.randomize_parameters(timm_model(name), seed=11)
    model = swin_jax.create_model(name)
    state = theirs.state_dict()
    back = swin_jax.to_torch(model, swin_jax.from_torch(model, state))
    assert set(back) == set(state)
    for key, tensor in state.items():
        assert back[key].dtype == np.float32 and back[key].shape == tuple(tensor.shape), key
        np.testing.assert_array_equal(back[key], tensor.numpy(), err_msg=key)


def test_from_torch_accepts_numpy_and_ignores_saved_buffers(timm_tiny):
    """Files may hold relative_position_index / attn_mask buffers (Microsoft's official code)."""
    model = swin_jax.create_model(NAME)
    with_buffers = {k: v.numpy() for k, v in timm_tiny.state_dict().items()}
    ref = swin_torch_ref.create_model(NAME)
    for key, buffer in ref.named_buffers():
        with_buffers[key] = buffer.numpy()
    assert any(k.endswith("attn_mask") for k in with_buffers)
    params = swin_jax.from_torch(model, with_buffers)
    plain = swin_jax.from_torch(model, timm_tiny.state_dict())
    jax.tree.map(np.testing.assert_array_equal, params, plain)


@pytest.mark.parametrize("name, overrides", [
    (NAME, CUSTOM_200x264), ("vit_tiny_patch16_224", AVG_NO_CLASS),
], ids=["swin-200x264", "vit-avg-noclass"])
def test_timm_loads_jax_weights_and_reproduces_logits(name, overrides, record):
    """Weights drawn in JAX (at O(1) scale) go to timm strictly and give the same logits."""
    model = swin_jax.create_model(name, **overrides)
    params = randomize_jax_params(swin_jax.init_params(model, 3), seed=4)
    theirs = timm_model(name, **overrides)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in swin_jax.to_torch(model, params).items()}, strict=True)
    images = torch.randn(2, 3, *model.config.img_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = theirs(images).numpy()
    ours = jax.jit(model.apply)({"params": params}, jnp.asarray(nchw_to_nhwc(images)))
    label = f"{model.config.family} timm loaded from to_torch, logits"
    assert record(label, rel_diff(expected, ours)) <= FORWARD_TOL


def test_bfloat16_torch_tensors_are_read():
    ref = swin_torch_ref.create_model(NAME, **CUSTOM_200x264)
    model = swin_jax.create_model(NAME, **CUSTOM_200x264)
    state = {k: v.to(torch.bfloat16) for k, v in ref.state_dict().items()}
    params = swin_jax.from_torch(model, state)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    np.testing.assert_array_equal(np.asarray(params["head"]["fc"]["kernel"]), to_numpy(state["head.fc.weight"]).T)


def test_parity_hands_a_bfloat16_file_to_timm(tmp_path):
    """check_parity gives timm a timm-layout file's own tensors: bfloat16 ones as float32."""
    from swin_jax.parity import check_parity

    theirs = swin_torch_ref.randomize_parameters(timm_model(NAME, **CUSTOM_200x264), seed=7)
    path = tmp_path / "bf16.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in theirs.state_dict().items()}, path)
    report = check_parity(NAME, checkpoint=path, reference="timm", batch=1, **CUSTOM_200x264)
    assert report.weights == f"{path} (timm layout)" and report.passed, report.table()


def test_mismatched_checkpoint_lists_every_bad_key(timm_tiny):
    model = swin_jax.create_model(NAME)
    state = dict(timm_tiny.state_dict())
    del state["layers.2.blocks.3.mlp.fc1.bias"]
    state["layers.0.blocks.0.attn.extra"] = torch.zeros(3, 4)
    state["head.fc.weight"] = torch.zeros(10, 768)
    with pytest.raises(CheckpointMismatchError) as info:
        swin_jax.from_torch(model, state)
    message = str(info.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped" in message
    assert "missing     layers.2.blocks.3.mlp.fc1.bias (1536,)" in message
    assert "unexpected  layers.0.blocks.0.attn.extra (3, 4)" in message
    assert "mis-shaped  head.fc.weight: checkpoint (10, 768), model expects (1000, 768)" in message
    assert (info.value.missing, info.value.unexpected) == (
        [("layers.2.blocks.3.mlp.fc1.bias", (1536,))], [("layers.0.blocks.0.attn.extra", (3, 4))])


@pytest.mark.parametrize("problem, counts, line", [
    ("missing", "1 missing, 0 unexpected, 0 mis-shaped", "missing     norm.weight (768,)"),
    ("unexpected", "0 missing, 1 unexpected, 0 mis-shaped", "unexpected  norm.extra (2,)"),
    ("misshaped", "0 missing, 0 unexpected, 1 mis-shaped",
     "mis-shaped  layers.1.downsample.reduction.weight: checkpoint (192, 385), model expects (192, 384)"),
])
def test_each_kind_of_mismatch_alone(timm_tiny, problem, counts, line):
    model = swin_jax.create_model(NAME)
    state = dict(timm_tiny.state_dict())
    if problem == "missing":
        del state["norm.weight"]
    elif problem == "unexpected":
        state["norm.extra"] = torch.zeros(2)
    else:
        state["layers.1.downsample.reduction.weight"] = torch.zeros(192, 385)
    with pytest.raises(CheckpointMismatchError) as info:
        swin_jax.from_torch(model, state)
    first, *listed = str(info.value).splitlines()
    assert first.endswith(f": {counts} key(s)"), first
    assert listed == [f"  {line}"], listed


def test_to_torch_rejects_params_of_another_model():
    small = swin_jax.create_model(NAME, **CUSTOM_200x264)
    tiny = swin_jax.create_model(NAME)
    with pytest.raises(CheckpointMismatchError, match="mis-shaped  patch_embed/proj/kernel"):
        swin_jax.to_torch(tiny, swin_jax.init_params(small))
