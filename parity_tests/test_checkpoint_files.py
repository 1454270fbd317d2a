"""The checkpoint files users hold: timm's training output (EMA weights opt-in), DDP /
torch.compile / Lightning prefixes, mm*-style metadata; nothing in a pickle runs; and a parity
verdict that cannot pass on NaN or on an output one side did not return."""
from __future__ import annotations

import argparse
import math
import os
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

import swin_jax
import swin_torch_ref
from conftest import add_to_hub_cache, rel_diff, run_cli, timm_model
from swin_jax import cli
from swin_jax.checkpoint_io import read_checkpoint, strip_wrapper_prefix
from swin_jax.difference import nonfinite, relative_difference
from swin_jax.parity import ParityReport, compare

VIT = "vit_tiny_patch16_224"
VIT_ARGS = dict(img_size=32, num_classes=3)  # 2x2 patches: every block, cheap


def assert_trees_equal(a, b) -> None:
    flat_a, flat_b = (dict(jax.tree_util.tree_flatten_with_path(t)[0]) for t in (a, b))
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        assert np.array_equal(np.asarray(flat_a[key]), np.asarray(flat_b[key])), key


def vit_model():
    return swin_jax.create_model(VIT, **VIT_ARGS)


def main(capsys, *argv) -> tuple[int, str, str]:
    """`swin-jax ARGV` in this process: (exit status, stdout, stderr)."""
    status = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory):
    """A timm training run's checkpoint, written by timm's own CheckpointSaver with model EMA on:
    `state_dict`, `state_dict_ema` (different weights), `optimizer`, `args` (an argparse
    Namespace), `metric`, `saver`."""
    from timm.utils import CheckpointSaver, ModelEmaV3

    folder = tmp_path_factory.mktemp("timm_run")
    model = swin_torch_ref.randomize_parameters(timm_model(VIT, **VIT_ARGS), seed=0)
    ema = ModelEmaV3(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.9)
    ema.update(model)  # EMA = (model + 0.9 model) / 2: the two weight sets differ everywhere
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    args = argparse.Namespace(model=VIT, lr=1e-3, epochs=3, img_size=[32, 32])
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=ema, checkpoint_dir=str(folder),
                            recovery_dir=str(folder), max_history=2)
    saver.save_checkpoint(epoch=0, metric=61.5)
    path = folder / "model_best.pth.tar"
    assert path.is_file() and {"state_dict", "state_dict_ema", "args", "optimizer"} <= set(
        torch.load(path, weights_only=False))  # what timm wrote (read here with our own trusted file only)
    return path


# ----- timm's training output


def test_timm_checkpoint_loads_as_timm_loads_it(timm_run):
    """load_checkpoint reads the model weights by default, the EMA weights with use_ema, bit for
    bit what timm's own `load_state_dict` gives (through from_torch)."""
    from timm.models import load_state_dict

    model = vit_model()
    for use_ema in (False, True):
        expected = swin_jax.from_torch(model, load_state_dict(str(timm_run), use_ema=use_ema))
        assert_trees_equal(swin_jax.load_checkpoint(model, timm_run, use_ema=use_ema), expected)
    read = read_checkpoint(timm_run)
    assert (read.weight_set, read.prefix, read.layout) == ("state_dict", "", "timm")
    assert set(read.weight_sets) == {"state_dict", "state_dict_ema"}
    assert read_checkpoint(timm_run, use_ema=True).weight_set == "state_dict_ema"
    plain, averaged = (read_checkpoint(timm_run, use_ema=e).state_dict["head.bias"] for e in (False, True))
    assert not torch.equal(plain, averaged)  # the two sets really differ


def test_inspect_names_the_model_and_its_weight_sets(timm_run, capsys):
    status, out, err = main(capsys, "inspect", timm_run)
    assert status == 0, err
    assert "weights     state_dict; the file also holds state_dict_ema (--use-ema reads it)" in out
    assert "matches     vit_tiny_patch16_224" in out and "num_classes 3" in out
    status, out, err = main(capsys, "inspect", timm_run, "--use-ema")
    assert status == 0 and "weights     state_dict_ema; the file also holds state_dict" in out, err


def test_parity_passes_on_a_timm_checkpoint(timm_run, capsys):
    for extra in ([], ["--use-ema"]):
        status, out, err = main(capsys, "parity", VIT, "--checkpoint", timm_run, "--img-size", 32, 32, *extra)
        assert status == 0 and "PASS" in out, out + err
        assert ("state_dict_ema" if extra else "state_dict") in out.splitlines()[0]


def test_ema_is_opt_in_and_named_when_absent(timm_run, tmp_path, capsys):
    flat = tmp_path / "flat.safetensors"
    swin_jax.save_checkpoint(vit_model(), swin_jax.load_checkpoint(vit_model(), timm_run), flat)
    with pytest.raises(ValueError, match="holds no EMA weights"):
        read_checkpoint(flat, use_ema=True)
    only_ema = tmp_path / "only_ema.pth"
    torch.save({"state_dict_ema": read_checkpoint(timm_run, use_ema=True).state_dict, "epoch": 3}, only_ema)
    status, _, err = main(capsys, "inspect", only_ema)
    assert status == 2 and "holds only EMA weights (state_dict_ema): read them with use_ema=True / --use-ema" in err
    status, _, err = main(capsys, "inspect", only_ema, "--use-ema")
    assert status == 0, err


def test_converted_cache_keeps_each_weight_set(timm_run, tmp_path, monkeypatch):
    """A training checkpoint on the Hub (`hf-hub:ORG/REPO/FILE`): load_pretrained converts the
    model weights and the EMA weights into separate cache files."""
    from huggingface_hub import constants

    from swin_jax import pretrained

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("SWIN_JAX_CACHE", str(tmp_path / "converted"))
    add_to_hub_cache(tmp_path / "hub", "someone/vit-run", {"model_best.pth.tar": timm_run.read_bytes()})
    name = "hf-hub:someone/vit-run/model_best.pth.tar"
    model = vit_model()
    for use_ema in (False, True):
        _, params = swin_jax.load_pretrained(name, architecture=VIT, use_ema=use_ema, progress=False, img_size=(32, 32))
        assert_trees_equal(params, swin_jax.load_checkpoint(model, timm_run, use_ema=use_ema))
    resolved = swin_jax.resolve_pretrained(name, architecture=VIT)
    paths = {pretrained.converted_path(resolved, model.config, use_ema=e) for e in (False, True)}
    assert len(paths) == 2 and all(p.is_file() for p in paths)  # both kept: neither is stale


def image_folder(root: Path, classes: int, per_class: int = 8) -> Path:
    """An ImageFolder of random 36x40 PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


def test_validate_and_predict_read_the_ema_weights(timm_run, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    data = image_folder(tmp_path / "data", classes=3, per_class=2)
    results = {}
    for extra in ([], ["--use-ema"]):
        status, out, err = main(capsys, "validate", VIT, "--checkpoint", timm_run, "--data", data, "--img-size", 32,
                                32, "--workers", 0, "--batch-size", 6, *extra)
        assert status == 0 and "top-1" in out, err
        assert ("timm layout, state_dict_ema)" if extra else "timm layout, state_dict)") in err
        results[bool(extra)] = out.split("loss ")[1].split()[0]
    assert results[True] != results[False]  # another weight set, another loss

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("SWIN_JAX_CACHE", str(tmp_path / "converted"))
    add_to_hub_cache(tmp_path / "hub", "someone/vit-run", {"model_best.pth.tar": timm_run.read_bytes()})
    image = data / "class0" / "0.png"
    tops = {}
    for extra in ([], ["--use-ema"]):
        status, out, err = main(capsys, "predict", image, "--model", "hf-hub:someone/vit-run/model_best.pth.tar",
                                "--json", *extra)
        assert status == 0, err
        tops[bool(extra)] = out
    assert tops[True] != tops[False]


def test_trainer_fine_tunes_from_a_timm_checkpoint(timm_run, tmp_path):
    """`python -m train --init model_best.pth.tar --init-use-ema`: the EMA weights, a new head."""
    image_folder(tmp_path / "data", classes=2)
    result = run_cli("train", "--model", VIT, "--data", tmp_path / "data", "--img-size", 32, 32, "--epochs", 1,
                     "--batch-size", 8, "--max-steps", 2, "--workers", 0, "--init", timm_run, "--init-use-ema",
                     "--out-dir", tmp_path / "run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"init: {timm_run} (timm layout, state_dict_ema, 3 classes); new 2-class head" in result.stdout
    assert "done:" in result.stdout and "0 image(s) apart" in result.stdout


# ----- wrapper prefixes


@pytest.fixture(scope="module")
def clean_state():
    return swin_torch_ref.randomize_parameters(timm_model(VIT, **VIT_ARGS), seed=3).state_dict()


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "_orig_mod.module.", "module._orig_mod.", "model."])
def test_wrapper_prefixes_are_stripped(clean_state, tmp_path, prefix, capsys):
    """DDP (`module.`), torch.compile (`_orig_mod.`), both, and Lightning's `model.` under
    `state_dict` (with its hyper-parameters beside it): the params are the clean file's."""
    path = tmp_path / ("last.ckpt" if prefix == "model." else "ddp.pth")
    torch.save({"state_dict": {prefix + k: v for k, v in clean_state.items()},
                "hyper_parameters": {"lr": 1e-3, "args": argparse.Namespace(lr=1e-3)}, "global_step": 10}, path)
    read = read_checkpoint(path)
    assert read.prefix == prefix and read.layout == "timm" and read.describe_choice() == \
        f"state_dict, prefix {prefix!r} stripped"
    model = vit_model()
    assert_trees_equal(swin_jax.load_checkpoint(model, path), swin_jax.from_torch(model, clean_state))
    status, out, err = main(capsys, "inspect", path)
    assert status == 0 and f"prefix      {prefix!r} stripped from every key" in out, err


def test_keys_that_fit_a_layout_keep_their_prefix():
    """Only keys that fit no layout lose a prefix: a CLIP file's `vision_model.` is its layout's."""
    params = swin_jax.init_params(swin_jax.create_model("vit_base_patch16_clip_224", img_size=32, depth=1,
                                                        embed_dim=64, num_heads=2, num_classes=0), 0)
    model = swin_jax.create_model("vit_base_patch16_clip_224", img_size=32, depth=1, embed_dim=64, num_heads=2,
                                  num_classes=0)
    state = swin_jax.to_torch(model, params, "hf_clip_vision")
    wrapped = {"vision_model." + k: v for k, v in state.items()}  # hf_clip's names
    assert strip_wrapper_prefix(wrapped) == (wrapped, "")
    assert strip_wrapper_prefix({"module." + k: v for k, v in wrapped.items()})[1] == "module."
    assert strip_wrapper_prefix({"module." + k: v for k, v in state.items()})[1] == "module."
    assert strip_wrapper_prefix({"junk." + k: v for k, v in wrapped.items()}, layout="hf_clip")[1] == "junk."


# ----- objects in the pickle: read without importing or running anything

FOREIGN_MODULE = '''
import pathlib
pathlib.Path({marker!r}).touch()  # importing this module runs code: the loader must not import it

class HistoryBuffer:  # mmengine's message-hub entry: a plain object
    def __init__(self):
        self.data = [1.0, 2.0]

class CfgNode(dict):  # yacs' config (Microsoft's Swin saves one as `config`): a dict subclass
    pass

class StackSummary(list):  # a list subclass
    pass
'''


def test_foreign_objects_in_meta_do_not_stop_the_tensors(clean_state, tmp_path, monkeypatch):
    """An mm*-style file: `meta` holds objects of a module that is not installed at load time (and
    whose import would run code), numpy scalars and arrays; Microsoft-style `config` a dict
    subclass. The tensors load; the module is never imported."""
    marker = tmp_path / "imported"
    package = tmp_path / "site"
    package.mkdir()
    (package / "fake_mmengine_logging.py").write_text(FOREIGN_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(package))
    import fake_mmengine_logging as foreign

    config = foreign.CfgNode(MODEL=foreign.CfgNode(TYPE="swin"), TRAIN={"EPOCHS": 300})
    trace = foreign.StackSummary([1, 2])
    meta = {"message_hub": {"log_scalars": {"train/loss": foreign.HistoryBuffer()}},
            "seed": np.int64(3), "lr": np.float32(0.5), "curve": np.arange(3.0), "trace": trace,
            "mmengine_version": "0.10.4"}
    path, legacy = tmp_path / "iter_8000.pth", tmp_path / "legacy.pth"
    torch.save({"meta": meta, "state_dict": clean_state, "config": config}, path)
    # the pre-zip format: no list of globals up front, torch's loader names them one by one
    torch.save({"meta": meta, "state_dict": clean_state, "config": config}, legacy, _use_new_zipfile_serialization=False)
    marker.unlink()
    monkeypatch.delitem(sys.modules, "fake_mmengine_logging")

    model = vit_model()
    for file in (path, legacy):
        assert_trees_equal(swin_jax.load_checkpoint(model, file), swin_jax.from_torch(model, clean_state))
        assert not marker.exists() and "fake_mmengine_logging" not in sys.modules


CRAFTED_NUMPY = '''
import collections, pathlib, sys
import numpy as np, torch
class ForgedDtype:  # a dtype state whose flags hide an object field: numpy would trust them
    def __reduce__(self):
        return (np.dtype, ("V8", False, True), (3, "|", None, ("a",), {{"a": (np.dtype("O"), 0)}}, 8, 1, 0))
class ForgedArray:  # an "object" slot holding the pointer 0x4141414141414141
    def __reduce__(self):
        return (np.ndarray, ((1,), ForgedDtype(), b"A" * 8))
state = {{k: torch.zeros(2) for k in ("a.weight", "a.bias")}}
torch.save({{"state_dict": {{**state, "forged": ForgedArray(), "steps": 3}}, "meta": {{"forged": ForgedArray(),
            "hist": collections.defaultdict(list, x=[np.float64(1.0)]), "dir": pathlib.PureWindowsPath("C:/runs"),
            "big": frozenset(range(10))}}}}, sys.argv[1], _use_new_zipfile_serialization=sys.argv[2] == "zip")
'''


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_crafted_numpy_values_are_recorded_not_rebuilt(tmp_path, fmt):
    """numpy values in a pickle are inert stand-ins, never numpy objects: a dtype whose state hides
    an object field (a pointer the file chooses) cannot reach numpy. The tensors load; the forged
    entry and the step count in the state_dict are left out, as no parameter takes them."""
    path = tmp_path / "forged.pth"
    made = run_cli("python", "-c", CRAFTED_NUMPY.format(), path, fmt)
    assert made.returncode == 0, made.stderr
    reader = ("import sys; from swin_jax.checkpoint_io import read_checkpoint, _torch_load; "
              "from swin_jax.torch_pickle import PickledObject\n"
              "obj = _torch_load(__import__('pathlib').Path(sys.argv[1]))\n"
              "assert isinstance(obj['meta']['forged'], PickledObject), type(obj['meta']['forged'])\n"
              "print(repr(obj['meta']['forged']), obj['meta']['dir'])\n"
              "print(sorted(read_checkpoint(sys.argv[1], layout='timm').state_dict))")
    result = run_cli("python", "-c", reader, path)
    assert result.returncode == 0, result.stderr  # a crash here (rc -11) is numpy dereferencing the pointer
    assert "<numpy.ndarray from the checkpoint, not rebuilt>" in result.stdout and "C:\\runs" in result.stdout
    assert "['a.bias', 'a.weight']" in result.stdout


def test_nested_weight_sets_are_opened(clean_state, tmp_path):
    path = tmp_path / "nested.pth"
    torch.save({"model": {"state_dict": dict(clean_state), "epoch": 3}, "optimizer": {}}, path)
    read = read_checkpoint(path)
    assert read.weight_set == "model.state_dict" and read.weight_sets == ("model",)
    model = vit_model()
    assert_trees_equal(swin_jax.load_checkpoint(model, path), swin_jax.from_torch(model, clean_state))
    empty = tmp_path / "empty.pth"
    torch.save({"state_dict": {}, "epoch": 1}, empty)
    with pytest.raises(ValueError, match="holds no state_dict of tensors: it has 2 entries"):
        read_checkpoint(empty)


EVIL = '''
import os, sys, torch
class Evil:
    def __reduce__(self):
        return ({call}, ({argument!r},))
torch.save({{"state_dict": {{"head.weight": torch.zeros(2, 2)}}, "x": Evil()}}, sys.argv[1],
           _use_new_zipfile_serialization=sys.argv[2] == "zip")
'''


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("call,name", [("os.system", "posix.system"), ("eval", "builtins.eval"),
                                       ("__import__('subprocess').Popen", "commands.Popen")])  # pickle's py2 name
def test_a_pickle_that_runs_code_is_refused(tmp_path, capsys, fmt, call, name):
    """A .pth whose pickle calls os.system / eval / subprocess.Popen: one error line naming it,
    exit 2, and the command it carries never runs."""
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    argument = command if call != "eval" else f"__import__('os').system({command!r})"
    if call.endswith("Popen"):
        argument = ["touch", str(marker)]
    path = tmp_path / "evil.pth"
    made = run_cli("python", "-c", EVIL.format(call=call, argument=argument), path, fmt)
    assert made.returncode == 0 and not marker.exists(), made.stderr
    for command_line in (["inspect", path], ["convert", path, tmp_path / "out.msgpack", "--model", VIT],
                         ["parity", VIT, "--checkpoint", path]):
        status, out, err = main(capsys, *command_line)
        assert status == 2 and not marker.exists(), err
        lines = [line for line in err.splitlines() if "error" in line]  # convert also says what it reads
        assert len(lines) == 1 and f"its pickle names {name}" in lines[0] and "nothing in the file was run" in lines[0]
        assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pth"]  # no output, no temp file
    with pytest.raises(ValueError, match=f"its pickle names {name}"):
        swin_jax.load_checkpoint(vit_model(), path)
    assert not marker.exists()


# ----- a parity verdict that cannot pass on a bad comparison


def test_difference_measure_sees_every_nonfinite_value():
    a = np.array([1.0, np.nan, 3.0])
    assert relative_difference(a, a) == math.inf  # NaN in the same place on both sides: not equal
    assert relative_difference(np.ones(3), np.array([1.0, 1.0, np.inf])) == math.inf
    assert relative_difference(np.ones(3), np.ones(3) * 1.5) == 0.5
    assert relative_difference(np.full(3, 4.0), np.full(3, 5.0), floor=0) == 0.25
    with pytest.raises(ValueError, match="shapes differ"):
        relative_difference(np.ones(3), np.ones(4))
    count = nonfinite(np.array([[0.0, 1.0], [np.inf, np.nan]]))
    assert (count.count, count.first) == (2, (1, 0))
    assert rel_diff(a, a) == math.inf  # the suite's measure is the library's


def test_report_fails_on_nan_missing_outputs_and_a_nan_tolerance():
    good, nan = np.ones((2, 3)), np.array([[1.0, np.nan, 1.0], [1.0, 1.0, 1.0]])
    rows = [compare("block0", good, good), compare("block1", nan, nan), compare("logits", good, good)]
    report = ParityReport("m", (32, 32), "w", "ref", 1e-5, rows)
    assert not report.passed and report.max_rel_diff == math.inf
    assert "FAIL: block1: the reference: 1 of 6 non-finite, first at (0, 1); swin_jax: 1 of 6" in report.table()
    assert not ParityReport("m", (32, 32), "w", "ref", 1e-5, [compare("block0", good, None)]).passed
    assert not ParityReport("m", (32, 32), "w", "ref", 1e-5, [compare("block0", good, good.T)]).passed
    assert not ParityReport("m", (32, 32), "w", "ref", 1e-5, []).passed
    assert not ParityReport("m", (32, 32), "w", "ref", float("nan"), [compare("block0", good, good)]).passed
    assert ParityReport("m", (32, 32), "w", "ref", 1e-5, [compare("block0", good, good)]).passed


def test_parity_fails_on_inf_in_a_middle_block(clean_state, tmp_path, capsys):
    """One inf in block 5's fc2 bias: blocks 5-11 and the logits are non-finite on both sides.
    FAIL, exit 1, block5 named first."""
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in clean_state.items()}
    state["blocks.5.mlp.fc2.bias"][7] = math.inf
    path = tmp_path / "inf.safetensors"
    save_file(state, str(path))
    status, out, err = main(capsys, "parity", VIT, "--checkpoint", path, "--img-size", 32, 32)
    assert status == 1, out + err
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("FAIL: block5: the reference: ") and "non-finite" in verdict, out
    assert "not compared" in out and "PASS" not in out


def test_parity_fails_when_the_reference_returns_an_output_fewer(clean_state, tmp_path, capsys, monkeypatch):
    from safetensors.torch import save_file

    from swin_jax import parity

    path = tmp_path / "vit.safetensors"
    save_file(dict(clean_state), str(path))
    status, out, _ = main(capsys, "parity", VIT, "--checkpoint", path, "--img-size", 32, 32)
    assert status == 0 and "PASS" in out, out  # the same file passes with every output
    real = parity.torch_outputs
    monkeypatch.setattr(parity, "torch_outputs", lambda *a: (real(*a)[0][:-1], real(*a)[1]))
    status, out, err = main(capsys, "parity", VIT, "--checkpoint", path, "--img-size", 32, 32)
    assert status == 1 and out.strip().splitlines()[-1] == "FAIL: block11: the reference returned no such output", out
    monkeypatch.setattr(parity, "torch_outputs", lambda *a: (real(*a)[0], real(*a)[1][:, :2]))
    status, out, err = main(capsys, "parity", VIT, "--checkpoint", path, "--img-size", 32, 32)
    assert status == 1 and "FAIL: logits: shapes differ: reference (2, 2), swin_jax (2, 3)" in out, out


def test_parity_help_documents_the_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        cli.main(["parity", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 PASS; 1 FAIL" in text and "2 an error" in text and "NaN or inf" in text
