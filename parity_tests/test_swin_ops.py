"""Window operations of swin_jax against swin_torch_ref's and timm's."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from timm.models import swin_transformer as timm_swin

import swin_torch_ref.swin as ref
from cases import CUSTOM_200x264, CUSTOM_WINDOW_5x7
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


@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (1, 7, 5, 2)], ids=["even", "odd"])
def test_merge_2x2_neighbours_is_timms_gather(shape):
    """The patch-merging gather (both versions): timm V2's PatchMerging with its linear layer set
    to the identity returns exactly its gathered, padded neighbourhoods."""
    from timm.models.swin_transformer_v2 import PatchMerging

    x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    theirs = PatchMerging(shape[-1], out_dim=4 * shape[-1])
    with torch.no_grad():
        theirs.reduction.weight.copy_(torch.eye(4 * shape[-1]))
        theirs.norm = torch.nn.Identity()
        expected = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(np.asarray(swin.merge_2x2_neighbours(jnp.asarray(x))), expected)


def test_cyclic_shift_is_torch_roll():
    x = np.arange(2 * 5 * 7 * 3, dtype=np.float32).reshape(2, 5, 7, 3)
    ours = swin.cyclic_shift(jnp.asarray(x), (2, 3))
    np.testing.assert_array_equal(np.asarray(ours), torch.roll(torch.from_numpy(x), (-2, -3), (1, 2)).numpy())
    np.testing.assert_array_equal(np.asarray(swin.cyclic_shift(ours, (2, 3), reverse=True)), x)


@pytest.mark.parametrize("overrides", [{}, CUSTOM_200x264, CUSTOM_WINDOW_5x7])
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
