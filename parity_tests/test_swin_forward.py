"""Swin forward cases, run by test_forward.py."""
import pytest


CUSTOM_200x264 = dict(img_size=(200, 264), embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4))
# non-square window, patch 2, 3 stages, 1 input channel, maps (30x46 -> 15x23 -> 8x12) no window divides
CUSTOM_WINDOW_5x7 = dict(img_size=(60, 92), patch_size=2, window_size=(5, 7), embed_dim=24, depths=(2, 2, 2),
                         num_heads=(2, 3, 4), num_classes=17, in_chans=1)

SWIN_CASES = [
    pytest.param(("tiny224", "swin_tiny_patch4_window7_224", {}, 2), id="tiny224"),
    pytest.param(("custom200x264", "swin_tiny_patch4_window7_224", CUSTOM_200x264, 2), id="custom200x264"),
    pytest.param(("custom60x92-window5x7", "swin_tiny_patch4_window7_224", CUSTOM_WINDOW_5x7, 2), id="custom60x92-window5x7"),
    pytest.param(("small224", "swin_small_patch4_window7_224", {}, 2), id="small224", marks=pytest.mark.slow),
    pytest.param(("base384-window12", "swin_base_patch4_window12_384", {}, 1), id="base384-window12", marks=pytest.mark.slow),
]
