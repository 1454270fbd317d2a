"""Model cases shared by the parity tests: config overrides, and the forward cases that
test_forward.py runs in both families, each `(case id, registered model, overrides, batch)`."""
import pytest

SWIN = "swin_tiny_patch4_window7_224"
VIT = "vit_tiny_patch16_224"

# ----- Swin

CUSTOM_200x264 = dict(img_size=(200, 264), embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4))
# non-square window, patch 2, 3 stages, 1 input channel, maps (30x46 -> 15x23 -> 8x12) no window divides
CUSTOM_WINDOW_5x7 = dict(img_size=(60, 92), patch_size=2, window_size=(5, 7), embed_dim=24, depths=(2, 2, 2),
                         num_heads=(2, 3, 4), num_classes=17, in_chans=1)

SWIN_CASES = [
    pytest.param(("tiny224", SWIN, {}, 2), id="tiny224"),
    pytest.param(("custom200x264", SWIN, CUSTOM_200x264, 2), id="custom200x264"),
    pytest.param(("custom60x92-window5x7", SWIN, CUSTOM_WINDOW_5x7, 2), id="custom60x92-window5x7"),
    pytest.param(("small224", "swin_small_patch4_window7_224", {}, 2), id="small224", marks=pytest.mark.slow),
    pytest.param(("base384-window12", "swin_base_patch4_window12_384", {}, 1), id="base384-window12",
                 marks=pytest.mark.slow),
]

# ----- Swin V2

SWINV2 = "swinv2_tiny_window8_256"
# non-square, no window divides the maps (18x26 -> 9x13 -> 5x7, the window clamping -> 3x4)
CUSTOM_V2_72x104 = dict(img_size=(72, 104), embed_dim=24, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4))
# a "12to16"-style model: its position-bias coordinates scaled by smaller pre-training windows
CUSTOM_V2_PRETRAINED = dict(img_size=(128, 96), embed_dim=24, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4),
                            pretrained_window_sizes=(6, 6, 4, 2))

SWINV2_CASES = [
    pytest.param(("tiny256", SWINV2, {}, 2), id="v2-tiny256"),
    pytest.param(("custom72x104", SWINV2, CUSTOM_V2_72x104, 2), id="v2-custom72x104"),
    pytest.param(("custom128x96-pretrained6-6-4-2", SWINV2, CUSTOM_V2_PRETRAINED, 2),
                 id="v2-custom128x96-pretrained6-6-4-2"),
    pytest.param(("base-window12to16", "swinv2_base_window12to16_192to256", {}, 1), id="v2-base-window12to16",
                 marks=pytest.mark.slow),
]

# ----- ViT

AVG = dict(global_pool="avg")  # timm: mean of the patch tokens, then fc_norm
AVG_NO_CLASS = dict(global_pool="avg", class_token=False)
# Google's 'gap' head: normalise the tokens, then average
CUSTOM_GAP = dict(img_size=(96, 160), patch_size=8, embed_dim=64, depth=4, num_heads=4, mlp_ratio=3.0,
                  global_pool="avg", fc_norm=False, num_classes=11, in_chans=2)

VIT_CASES = [
    pytest.param(("tiny224", VIT, {}, 2), id="tiny224"),
    pytest.param(("tiny224-avg", VIT, AVG, 2), id="tiny224-avg"),
    pytest.param(("small224", "vit_small_patch16_224", {}, 2), id="small224"),
    pytest.param(("small224-avg-noclass", "vit_small_patch16_224", AVG_NO_CLASS, 2), id="small224-avg-noclass"),
    pytest.param(("small32-224", "vit_small_patch32_224", {}, 2), id="small32-224"),
    pytest.param(("custom96x160-gap", VIT, CUSTOM_GAP, 2), id="custom96x160-gap"),
    pytest.param(("base224", "vit_base_patch16_224", {}, 2), id="base224", marks=pytest.mark.slow),
    pytest.param(("base224-avg", "vit_base_patch16_224", AVG, 2), id="base224-avg", marks=pytest.mark.slow),
    pytest.param(("small384", "vit_small_patch16_384", {}, 1), id="small384", marks=pytest.mark.slow),
]
