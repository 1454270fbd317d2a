"""`swin-jax convert` and `swin-jax inspect`, from the command line, and bad files."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import transformers
from conftest import FORWARD_TOL, randomize_jax_params, rel_diff, run_cli, timm_model
from safetensors.torch import load_file, save_file

import swin_jax
from swin_jax.layouts import to_numpy
from swin_torch_ref import randomize_parameters

SWIN_T = "swin_tiny_patch4_window7_224"


@pytest.fixture(scope="module")
def torchvision_swin(tmp_path_factory):
    """A torchvision swin_t with O(1) weights saved as .pth, and its logits on fixed images."""
    folder = tmp_path_factory.mktemp("tv")
    model = randomize_parameters(torchvision.models.swin_t(), seed=9).eval()
    torch.save(model.state_dict(), folder / "swin_t.pth")
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(images).numpy()
    return folder, images, logits


def test_import_then_export_to_transformers(torchvision_swin, record):
    folder, images, logits = torchvision_swin
    result = run_cli("swin-jax", "convert", folder / "swin_t.pth", folder / "swin_t.msgpack", "--model", SWIN_T)
    assert result.returncode == 0, result.stderr
    assert "torchvision -> swin_jax params" in result.stdout and "28,288,354 parameters" in result.stdout
    assert "reading" in result.stderr and "converting" in result.stderr  # progress output
    result = run_cli("swin-jax", "convert", folder / "swin_t.msgpack", folder / "swin_t_hf.safetensors",
                     "--model", SWIN_T, "--layout", "hf")
    assert result.returncode == 0, result.stderr
    hf = transformers.SwinForImageClassification(transformers.SwinConfig(
        embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, num_labels=1000)).eval()
    hf.load_state_dict(load_file(folder / "swin_t_hf.safetensors"), strict=True)
    with torch.no_grad():
        theirs = hf(pixel_values=images).logits.numpy()
    assert record("cli convert torchvision -> msgpack -> hf, logits", rel_diff(logits, theirs)) <= FORWARD_TOL


def test_layout_to_layout_and_parity_on_the_result(torchvision_swin):
    folder, _, _ = torchvision_swin
    out = folder / "swin_t_official.safetensors"
    result = run_cli("swin-jax", "convert", folder / "swin_t.pth", out, "--model", SWIN_T, "--layout", "official")
    assert result.returncode == 0, result.stderr
    assert "torchvision -> official" in result.stdout, result.stdout
    keys = set(load_file(out))
    assert "layers.0.downsample.reduction.weight" in keys and "head.weight" in keys
    result = run_cli("swin-jax", "parity", SWIN_T, "--checkpoint", out, "--reference", "timm")
    assert result.returncode == 0, result.stderr
    assert "(official layout)" in result.stdout and result.stdout.splitlines()[-1].startswith("PASS")


@pytest.mark.parametrize("name, layout", [("swin_t.pth", "torchvision"), ("swin_t.msgpack", "timm")])
def test_inspect(torchvision_swin, name, layout):
    folder, _, _ = torchvision_swin
    if not (folder / name).exists():
        run_cli("swin-jax", "convert", folder / "swin_t.pth", folder / name, "--model", SWIN_T)
    result = run_cli("swin-jax", "inspect", folder / name)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"layout      {layout}" in out and "family      swin" in out
    assert "parameters  28,288,354" in out and "depths      (2, 2, 6, 2)" in out
    assert "matches     swin_tiny_patch4_window7_224" in out


def test_vit_npz_to_timm_at_another_size(tmp_path, record):
    """The resampled pos_embed is timm's resampling of the saved one. O(1) weights (init's pos_embed
    is trunc-normal 0.02, small enough to pass any resampling under an absolute floor of 1), and a
    plain relative measure (floor 0)."""
    model = swin_jax.create_model("vit_tiny_patch16_224", num_classes=3)
    params = randomize_jax_params(swin_jax.init_params(model, 0), seed=4)
    assert np.abs(params["pos_embed"]).max() > 1  # O(1): N(0, 1) over 197 x 192 values
    swin_jax.save_checkpoint(model, params, tmp_path / "vit.npz", layout="vit_jax")
    out = tmp_path / "vit_384.safetensors"
    result = run_cli("swin-jax", "convert", tmp_path / "vit.npz", out, "--model", "vit_tiny_patch16_384")
    assert result.returncode == 0, result.stderr
    assert "vit_jax -> timm" in result.stdout, result.stdout
    theirs = timm_model("vit_tiny_patch16_384", num_classes=3)
    theirs.load_state_dict(load_file(out), strict=True)  # pos_embed resampled 14x14 -> 24x24
    from timm.layers import resample_abs_pos_embed

    expected = resample_abs_pos_embed(torch.from_numpy(np.array(params["pos_embed"])), new_size=(24, 24))
    diff = rel_diff(expected.numpy(), to_numpy(theirs.pos_embed), floor=0)
    assert record("cli convert npz 224 -> timm 384, pos_embed", diff) <= FORWARD_TOL, f"pos_embed: {diff:.3e}"


# ----- bad files: one clear message, exit 2, OUT untouched


def _sentinel(path: Path) -> bytes:
    path.write_bytes(b"previous contents")
    return path.read_bytes()


@pytest.mark.parametrize("kind", ["truncated.safetensors", "truncated.pth", "garbage.pth", "garbage.npz",
                                  "garbage.msgpack"])
def test_damaged_files(torchvision_swin, tmp_path, kind):
    folder, _, _ = torchvision_swin
    source = folder / "swin_t.pth"
    damaged = tmp_path / kind
    if kind == "truncated.safetensors":
        save_file({k: v.contiguous() for k, v in torch.load(source).items()}, str(tmp_path / "whole.safetensors"))
        damaged.write_bytes((tmp_path / "whole.safetensors").read_bytes()[:5_000_000])
    elif kind == "truncated.pth":
        damaged.write_bytes(source.read_bytes()[:5_000_000])
    else:
        damaged.write_bytes(np.random.default_rng(0).bytes(50_000))
    out = tmp_path / ("out.safetensors" if kind.endswith(".msgpack") else "out.msgpack")
    before = _sentinel(out)
    result = run_cli("swin-jax", "convert", damaged, out, "--model", SWIN_T)
    assert result.returncode == 2
    what = f"{damaged} as a PyTorch checkpoint" if kind.endswith(".pth") else f"{damaged}"
    assert f"cannot read {what}: the file is truncated or corrupted" in result.stderr, result.stderr
    assert "weights_only" not in result.stderr, result.stderr  # torch's advice: we never load with it
    assert "Traceback" not in result.stderr and out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files left


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_damaged_pth_is_named_without_torchs_advice(torchvision_swin, tmp_path, kind):
    """torch's own error on these files advises re-running torch.load with weights_only=False;
    swin_jax never loads that way, so its message names the file and leaves the advice out."""
    folder, _, _ = torchvision_swin
    damaged = tmp_path / f"{kind}.pth"
    whole = (folder / "swin_t.pth").read_bytes()
    damaged.write_bytes(whole[:len(whole) // 2] if kind == "truncated" else np.random.default_rng(1).bytes(50_000))
    message = f"cannot read {damaged} as a PyTorch checkpoint: the file is truncated or corrupted"
    with pytest.raises(ValueError) as info:
        swin_jax.load_checkpoint(swin_jax.create_model(SWIN_T), damaged)
    assert message in str(info.value) and "weights_only" not in str(info.value), str(info.value)
    assert "weights_only" not in str(info.value.__cause__ or "")  # nor in the traceback's chained error
    result = run_cli("swin-jax", "inspect", damaged)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "weights_only" not in result.stderr and "Traceback" not in result.stderr


def test_checkpoint_of_another_model(torchvision_swin, tmp_path):
    folder, _, _ = torchvision_swin
    out = tmp_path / "out.msgpack"
    result = run_cli("swin-jax", "convert", folder / "swin_t.pth", out, "--model", "swin_small_patch4_window7_224")
    assert result.returncode == 2 and not out.exists()
    first = next(line for line in result.stderr.splitlines() if "error:" in line)
    assert "checkpoint does not match the SwinTransformer model (torchvision layout)" in first
    assert "the file holds swin_tiny_patch4_window7_224" in first
    assert "missing     features.5.6.norm1.weight (384,)" in result.stderr and "... and" in result.stderr


def test_layout_that_cannot_be_detected(tmp_path):
    path = tmp_path / "odd.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2), "decoder.bias": torch.zeros(2)}, str(path))
    for args in (["inspect", path], ["convert", path, tmp_path / "o.msgpack", "--model", SWIN_T]):
        result = run_cli("swin-jax", *args)
        assert result.returncode == 2 and "cannot tell the checkpoint's layout from its 2 keys" in result.stderr
    assert not (tmp_path / "o.msgpack").exists()


def test_wrong_file_types_and_models(tmp_path):
    result = run_cli("swin-jax", "convert", tmp_path / "a.h5", tmp_path / "b.msgpack", "--model", SWIN_T)
    assert result.returncode == 2 and "unsupported file type '.h5'" in result.stderr
    result = run_cli("swin-jax", "convert", tmp_path / "a.pth", tmp_path / "b.msgpack", "--model", "swin_tinny")
    assert result.returncode == 2 and "unknown model 'swin_tinny'" in result.stderr
