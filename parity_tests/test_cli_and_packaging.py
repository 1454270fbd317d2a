"""The `swin-jax parity` command, and what imports what."""

import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import swin_torch_ref
from conftest import ROOT, run_cli

NAME = "swin_tiny_patch4_window7_224"
SMALL_SIZE = ["--img-size", "64", "96"]


def run(*args, cwd=None):
    """The installed `swin-jax` console script in a fresh process."""
    return run_cli("swin-jax", *args, cwd=cwd or ROOT, timeout=600)


def test_parity_cli_random_weights_prints_table_and_passes():
    result = run("parity", NAME, *SMALL_SIZE)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for row, shape in [("stage0", "(2, 16, 24, 96)"), ("stage3", "(2, 2, 3, 768)"), ("logits", "(2, 1000)")]:
        assert any(line.startswith(row) and shape in line for line in lines), result.stdout
    assert lines[-1].startswith("PASS: largest relative difference")


def test_parity_cli_exits_nonzero_above_tolerance():
    result = run("parity", NAME, *SMALL_SIZE, "--tolerance", "0", "--reference", "timm")
    assert result.returncode == 1
    assert "reference: timm" in result.stdout and "FAIL: largest relative difference" in result.stdout


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_parity_cli_reads_a_timm_checkpoint(tmp_path, suffix):
    """A 10-class timm-layout checkpoint, as a user would hold it; the class count is read from it."""
    model = swin_torch_ref.randomize_parameters(
        swin_torch_ref.create_model(NAME, img_size=(64, 96), num_classes=10), seed=7)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if suffix == ".pth":
        torch.save({"model": state}, path)  # nested, as training scripts save it
    else:
        save_file(state, str(path))
    result = run("parity", NAME, *SMALL_SIZE, "--checkpoint", str(path))
    assert result.returncode == 0, result.stderr
    assert f"weights: {path}" in result.stdout and "logits    (2, 10)" in result.stdout


def test_parity_cli_names_bad_checkpoint_keys(tmp_path):
    state = swin_torch_ref.create_model(NAME, img_size=(64, 96)).state_dict()
    del state["layers.1.blocks.0.norm1.bias"]
    path = tmp_path / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    result = run("parity", NAME, *SMALL_SIZE, "--checkpoint", str(path))
    assert result.returncode == 2
    assert "missing     layers.1.blocks.0.norm1.bias (192,)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["parity", "swin_tinny"], "unknown model 'swin_tinny'"),
    (["parity", NAME, "--checkpoint", "nowhere.pth"], "checkpoint file not found: nowhere.pth"),
])
def test_parity_cli_bad_arguments(args, message):
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_python_module_entry_point():
    result = run_cli("python", "-m", "swin_jax", "--help")
    assert result.returncode == 0 and "parity" in result.stdout


@pytest.mark.parametrize("module, forbidden", [
    ("swin_jax.configs", ("jax", "torch", "flax")),
    ("swin_torch_ref", ("jax", "flax")),
    # the library never imports the trainer, nor its tools (the bench lives in train/)
    ("swin_jax, swin_jax.models, swin_jax.cli, swin_jax.convert, swin_jax.checkpoint_info, "
     "swin_jax.parity", ("train", "train.loop", "train.pipeline", "train.bench")),
    # the benchmark imports the trainer's step only when it runs one, and timm only when it measures it
    ("train.bench", ("train.loop", "train.optim", "train.sharding", "train.data", "train.pipeline", "orbax",
                     "grain", "torch", "timm")),
])
def test_imports_stay_light(module, forbidden):
    code = f"import sys, {module}; print(sorted(m for m in {forbidden!r} if m in sys.modules))"
    result = run_cli("python", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_bench_import_leaves_the_gpu_setting_to_the_command():
    """Importing the bench changes nothing in the process: JAX's GPU preallocation is turned off
    by `leave_gpu_memory_to_torch()`, which `swin-jax bench` calls, and a setting already made stays."""
    check = ("import os, train.bench as b; before = os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE'); "
             "b.leave_gpu_memory_to_torch(); print(before, os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'])")
    unset = "import os; os.environ.pop('XLA_PYTHON_CLIENT_PREALLOCATE', None); "
    result = run_cli("python", "-c", unset + check)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "false"]
    result = run_cli("python", "-c", check, env={"XLA_PYTHON_CLIENT_PREALLOCATE": "true"})
    assert result.stdout.split() == ["true", "true"], result.stderr


def test_list_models_has_timm_names():
    import timm

    import swin_jax

    assert swin_jax.list_models("swin_*") == sorted([
        "swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224",
        "swin_base_patch4_window12_384", "swin_large_patch4_window7_224", "swin_large_patch4_window12_384"])
    assert len(swin_jax.list_models("vit_*_patch??_[0-9]*")) == 11  # Google's / augreg ViTs
    assert len(swin_jax.list_models("vit_*")) == 23 and len(swin_jax.list_models("deit*")) == 9
    assert swin_jax.list_models("swinv2*") == sorted(
        [f"swinv2_{size}_window{w}_256" for size in ("tiny", "small", "base") for w in (8, 16)]
        + [f"swinv2_{size}_window12{to}" for size in ("base", "large")
           for to in ("_192", "to16_192to256", "to24_192to384")])
    assert set(swin_jax.list_models()) <= set(timm.list_models())


@pytest.mark.parametrize("name, params, overrides", [
    ("swin_tiny_patch4_window7_224", 28_288_354, {}), ("swin_small_patch4_window7_224", 49_606_258, {}),
    ("swin_base_patch4_window7_224", 87_768_224, {}), ("swin_large_patch4_window7_224", 196_532_476, {}),
    ("vit_base_patch16_224", 86_567_656, {}), ("vit_large_patch16_224", 304_326_632, {}),
    ("vit_huge_patch14_224", 632_045_800, {"num_classes": 1000}), ("vit_huge_patch14_224", None, {}),
    ("vit_small_patch16_384", None, {}), ("vit_tiny_patch16_224", None, {}),
    ("vit_base_patch32_224", None, {}), ("swin_large_patch4_window12_384", None, {}),
    ("swinv2_tiny_window8_256", 28_347_154, {}), ("swinv2_base_window12to24_192to384", None, {}),
    ("swinv2_large_window12_192", None, {}),
])
def test_named_configs_have_timm_parameter_counts(name, params, overrides):
    import jax
    import timm

    import swin_jax

    model = swin_jax.create_model(name, **overrides)
    count = sum(leaf.size for leaf in jax.tree.leaves(swin_jax.param_shapes(model)))
    assert params is None or count == params  # the counts timm's model cards publish
    with torch.device("meta"):
        assert count == sum(p.numel() for p in timm.create_model(name, pretrained=False, **overrides).parameters())


def test_parity_cli_swinv2_random_weights():
    result = run("parity", "swinv2_tiny_window8_256", "--img-size", "72", "104", "--reference", "timm")
    assert result.returncode == 0, result.stderr
    assert "stage3" in result.stdout and result.stdout.splitlines()[-1].startswith("PASS")


def test_parity_cli_vit_random_weights():
    result = run("parity", "vit_tiny_patch16_224", "--img-size", "64", "96", "--reference", "timm")
    assert result.returncode == 0, result.stderr
    assert "block11   (2, 25, 192)" in result.stdout and result.stdout.splitlines()[-1].startswith("PASS")


def test_parity_cli_vit_npz_checkpoint(tmp_path):
    """A Google-layout .npz of a 224 model checked at 64x96: detected layout, resampled grid."""
    import swin_jax

    model = swin_jax.create_model("vit_tiny_patch16_224", num_classes=6)
    path = swin_jax.save_checkpoint(model, swin_jax.init_params(model, 1), tmp_path / "vit.npz", layout="vit_jax")
    result = run("parity", "vit_tiny_patch16_224", "--img-size", "64", "96", "--checkpoint", str(path))
    assert result.returncode == 0, result.stderr
    assert "(vit_jax layout)" in result.stdout and "logits    (2, 6)" in result.stdout


def _all_names():
    import swin_jax

    return swin_jax.list_models()


@pytest.mark.parametrize("name", _all_names())
def test_every_named_config_has_timm_keys_and_shapes(name):
    """swin_jax.create_model(name) and timm.create_model(name) hold the same tensors."""
    import timm

    import swin_jax
    from swin_jax.convert import _specs, get_layout

    ours = {s.canonical: s.canonical_shape for s in _specs(swin_jax.create_model(name), get_layout("timm"))}
    with torch.device("meta"):
        theirs = {k: tuple(v.shape) for k, v in timm.create_model(name, pretrained=False).state_dict().items()}
    assert ours == theirs


@pytest.mark.parametrize("name", _all_names())
def test_every_named_data_config_is_timms(name):
    """The image preparation of each name (interpolation, crop_pct, mean, std) is timm's for its
    default pretrained tag, and so is the input size."""
    import timm

    import swin_jax

    theirs = timm.models.get_pretrained_cfg(name).to_dict()
    ours = swin_jax.get_data_config(name)
    assert (ours.interpolation, ours.crop_pct) == (theirs["interpolation"], theirs["crop_pct"])
    assert np.allclose(ours.mean, theirs["mean"]) and np.allclose(ours.std, theirs["std"])
    assert tuple(swin_jax.get_config(name).img_size) == tuple(theirs["input_size"][1:])


def test_swin_jax_train_command_runs_the_training_cli(tmp_path):
    result = run("train", "--preset", "digits", "--max-steps", "2", "--out-dir", str(tmp_path), "--no-export",
                 "--layer-decay", "0.75", "--remat", "block")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done: 2 steps" in result.stdout and (tmp_path / "metrics.csv").exists()
    # the digits Swin: patch embedding, 2 + 2 blocks (the merging with the next block), the head
    assert f"layer decay 0.75: 6 layers, learning-rate scales {0.75 ** 5:.3g} (patch embedding) to 1 (head)" \
        in result.stdout
    assert len((tmp_path / "steps.csv").read_text().splitlines()) == 3  # header and 2 steps
    help_text = run("train", "--help").stdout
    assert "--coordinator" in help_text and "--accum-steps" in help_text


@pytest.mark.parametrize("name, remat", [("swin_tiny_patch4_window7_224", "none"), ("swinv2_tiny_window8_256", "block")])
def test_bench_command_writes_table_and_json(name, remat, tmp_path):
    import json

    out = tmp_path / "bench.json"
    result = run("bench", name, "--batch", "1", "--img-size", "32", "32", "--train",
                 "--repeats", "2", "--json", str(out), "--remat", remat)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    frameworks = {(r["framework"], r["mode"]) for r in report["results"]}
    assert frameworks == {(f, m) for f in ("swin_jax", "timm eager") for m in ("forward", "train")}
    assert report["machine"]["matmul_gflops"]["peak"] > 0
    assert all(r["img_per_s"] > 0 and r["gflop_per_img"] > 0 for r in report["results"])
    assert all(len(r["times_s"]) == 2 for r in report["results"])  # --repeats rounds, interleaved
    assert "ratio" in result.stdout and "swin_jax" in result.stdout
    # the compiled programs' XLA buffers, for the remat setting asked for
    assert report["remat"] == remat and "XLA arg/out/temp MiB" in result.stdout
    for r in report["results"]:
        if r["framework"] == "swin_jax":
            b = r["xla_buffers"]
            assert b["temp"] > 0 and b["total"] == b["argument"] + b["output"] + b["temp"] - b["alias"]


def test_bench_memory_probe_and_xla_options(tmp_path):
    """--memory measures each peak alone in a child process; --xla-option reaches XLA's compile
    (an unknown option must fail the swin_jax measurement, a known one must not)."""
    import json

    import swin_jax

    out = tmp_path / "bench.json"
    args = ("bench", "swin_tiny_patch4_window7_224", "--batch", "1", "--img-size", "32", "32", "--repeats", "1",
            "--json", str(out))
    result = run(*args, "--memory", "--xla-option", "xla_cpu_enable_fast_math=false")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["compiler_options"] == {NAME: {**swin_jax.compiler_options(NAME), "xla_cpu_enable_fast_math": False}}
    assert {r["framework"] for r in report["results"]} == {"swin_jax", "timm eager"}
    assert all(r["isolated_peak_mib"] > 0 for r in report["results"]), report["results"]
    assert "alone MiB" in result.stdout
    bad = run(*args, "--plain-xla", "--xla-option", "xla_cpu_no_such_option=1")
    assert "a measurement failed" in bad.stderr and "xla_cpu_no_such_option" in bad.stderr
    assert bad.returncode == 1 and "swin-jax bench: error: 1 measurement(s) failed: " in bad.stderr  # not exit 0
    assert json.loads(out.read_text())["failures"][0].startswith(f"{NAME} forward: ")
    # --plain-xla: XLA's defaults plus the given option only
    assert json.loads(out.read_text())["compiler_options"] == {NAME: {"xla_cpu_no_such_option": 1}}
    assert run(*args, "--xla-option", "no_equals_sign").returncode == 2


def _library_fusions_with_reductions(compiled_text: str) -> list[bool]:
    """For each YNNPACK library fusion in a compiled HLO module: does it contain a reduce?"""
    import re

    bodies = dict(re.findall(r"^(?:ENTRY )?%?(\S+) [^\n]*\{\n(.*?)\n\}", compiled_text, re.M | re.S))
    called = re.findall(r"calls=%?([\w.\-]+)[^\n]*__ynn_fusion", compiled_text)
    return ["reduce(" in bodies.get(name, "") for name in called]


def test_compiler_options_keep_reductions_out_of_library_fusions():
    """swin_jax.compiler_options(model): on CPU for Swin, XLA's YNNPACK fusions less its
    reduction fusions (which ran slower than XLA's own there); a LayerNorm compiled with them gets
    no fused reduce, with XLA's defaults it does, and both compute the same. None for ViT (slower
    with them) or other backends."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import swin_jax
    from swin_jax.backward import layer_norm
    from swin_jax.kernels import CPU_WITHOUT_REDUCE_FUSIONS

    assert swin_jax.compiler_options(NAME, backend="gpu") == {}
    assert swin_jax.compiler_options("vit_small_patch16_224", backend="cpu") == {}
    options = swin_jax.compiler_options(swin_jax.create_model(NAME), backend="cpu")
    assert options == swin_jax.compiler_options(NAME, backend="cpu") == CPU_WITHOUT_REDUCE_FUSIONS  # this jaxlib accepts them
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 56, 56, 96))
    scale, bias = jnp.full((96,), 1.5), jnp.full((96,), 0.5)
    lowered = jax.jit(lambda x, s, b: layer_norm(x, s, b, 1e-5, jnp.float32)).lower(x, scale, bias)
    plain, tuned = lowered.compile(), lowered.compile(options)
    assert any(_library_fusions_with_reductions(plain.as_text()))
    assert not any(_library_fusions_with_reductions(tuned.as_text()))
    np.testing.assert_allclose(tuned(x, scale, bias), plain(x, scale, bias), rtol=1e-5, atol=1e-5)


def test_bench_times_the_trainers_step(monkeypatch):
    """The swin_jax train step the bench times is the trainer's own `train.loop.train_step`
    (with its state and optimizer), so the published ratio is the one a user gets."""
    import train.loop
    from train import bench

    calls = []
    real = train.loop.train_step
    monkeypatch.setattr(train.loop, "train_step", lambda *a, **k: calls.append(sorted(k)) or real(*a, **k))
    result, run = bench.bench_jax("vit_tiny_patch16_224", 2, (32, 32), "float32", train=True, repeats=1)
    assert calls and {"task", "model", "tx", "schedule", "ema_decay", "accum_steps"} <= set(calls[0])
    assert result.mode == "train" and result.img_per_s > 0 and len(result.times_s) == 1
    assert not hasattr(result, "runner") and "runner" not in dataclasses.asdict(result)
    run()  # one more step, for run_bench's interleaved rounds
    assert len(calls) == 1  # compiled once: the runner reruns the compiled step


def test_bench_times_frameworks_in_turn():
    """interleaved_times runs A B A B ..., and gives each its own times: each call's wall time,
    at least the span the call itself read (start to end, inside it) and at most the gap between
    the calls either side (the call's own span plus the timer's overhead), summing to no more
    than the whole run's."""
    import time

    from train.bench import interleaved_times

    spans = []  # (run, start, end) of each call, read inside it

    def run(name, seconds):
        def call():
            start = time.perf_counter()
            time.sleep(seconds)
            spans.append((name, start, time.perf_counter()))
        return call

    begin = time.perf_counter()
    times = interleaved_times([run("a", 0.01), run("b", 0.03)], 3)
    wall = time.perf_counter() - begin
    assert [name for name, _, _ in spans] == ["a", "b"] * 3
    assert [len(t) for t in times] == [3, 3]
    edges = [begin] + [end for _, _, end in spans]  # before each call: the end of the one before it
    starts = [start for _, start, _ in spans] + [begin + wall]  # after each call: the next one's start
    for i, (name, start, end) in enumerate(spans):
        measured = times[i % 2][i // 2]
        assert end - start <= measured <= starts[i + 1] - edges[i], (name, i // 2, measured, end - start)
    assert sum(map(sum, times)) <= wall


def test_bench_flop_count_and_gpu_pairing(monkeypatch):
    """The model FLOPs come from the traced program, else from XLA:CPU's compiled count (a GPU's
    compiled count leaves out its library matmuls); timm follows JAX onto the GPU, or the bench
    says why it cannot; the matmul peak is measured in the bench's dtype."""
    import jax
    import jax.numpy as jnp
    import torch

    from train import bench

    a, b = jnp.ones((32, 48)), jnp.ones((48, 16))
    matmul = jax.jit(lambda a, b: jnp.tanh(a @ b))
    traced = bench.forward_flops(matmul, a, b)
    assert 2 * 32 * 48 * 16 <= traced <= 2 * 32 * 48 * 16 + 10 * 32 * 16  # the product, plus the tanh
    monkeypatch.setattr(jax.stages.Lowered, "cost_analysis", lambda self: None)  # as jaxlib 0.11 on a GPU
    assert bench.forward_flops(matmul, a, b) >= 2 * 32 * 48 * 16

    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert bench.torch_device() == "cpu"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bench.torch_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA"):
        bench.torch_device()
    monkeypatch.undo()
    peak = bench.matmul_peak_gflops(size=128, seconds=0.1, dtype="bfloat16")
    assert peak["dtype"] == "bfloat16" and peak["size"] == 128 and peak["peak"] >= max(peak["jax"], peak["torch"]) > 0


def test_bench_model_flops_write_out_fused_attention(monkeypatch):
    """The bench counts a model's FLOPs with every attention written out (a fused kernel is a
    custom call the count would leave out), whatever the model's attention setting."""
    import jax.numpy as jnp

    import swin_jax
    from swin_jax import kernels
    from train import bench

    calls = []
    real = kernels.fused_self_attention
    monkeypatch.setattr(kernels, "fused_self_attention", lambda *a: calls.append(a) or real(*a))
    model = swin_jax.create_model("vit_tiny_patch16_224", img_size=(32, 32), dtype=jnp.bfloat16,
                                  kernels=swin_jax.Kernels(attention="jax"))
    params = swin_jax.init_params(model, 0)
    x = jnp.zeros((2, 32, 32, 3))
    calls.clear()
    flops = bench._model_flops(model, params, x)
    assert not calls
    tokens, dim, depth = 5, model.config.embed_dim, model.config.depth
    assert flops >= 2 * 2 * depth * (2 * tokens * tokens * dim)  # the attention's two products at least
    model.apply({"params": params}, x)
    assert len(calls) == depth  # the model itself does run fused with this setting


def test_trim_host_memory_returns_freed_heap_pages():
    """Freed heap memory between live blocks stays resident until trim_host_memory hands it back
    (what XLA's compiler leaves behind after compiling a train step, here made with bytes)."""
    import psutil

    import swin_jax

    rss = lambda: psutil.Process().memory_info().rss / 2**20
    blocks = [b"\x01" * 65536 for _ in range(3200)]  # 200 MiB on the heap (under malloc's mmap threshold)
    del blocks[::2]  # 100 MiB of holes between live blocks: free() cannot give them back
    before = rss()
    if not swin_jax.trim_host_memory():
        pytest.skip("this C library has no malloc_trim (not glibc)")
    after = rss()
    assert before - after > 60, (before, after)
    assert len(blocks) == 1600 and blocks[-1][:1] == b"\x01"  # the live blocks are untouched


def test_the_wheel_ships_the_data_files_and_the_tools(tmp_path):
    """A (non-editable) wheel holds what the package reads at run time besides its code: the
    pretrained tags, the class names, and the trainer and benchmarks `swin-jax` runs."""
    import zipfile

    source = tmp_path / "src"  # a copy: building writes build/ and egg-info next to the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "runs",
                                                                "__pycache__", ".pytest_cache"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                             str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("swin_jax-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"swin_jax/configs/pretrained_tags.tsv", "swin_jax/layouts/engine.py", "train/bench.py",
            "train/classification.py", "swin_torch_ref/__init__.py"} <= names
    assert any(n.startswith("swin_jax/data/") and n.endswith(".tsv.gz") for n in names)
    assert not any(n.startswith("parity_tests/") for n in names)
