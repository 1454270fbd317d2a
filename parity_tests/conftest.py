"""Shared set-up of the parity suite: fp32, highest matmul precision, timm's plain attention."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

os.environ["TIMM_FUSED_ATTN"] = "0"  # before timm is imported anywhere
# One XLA compilation cache for the session (before jax is imported), shared by this process and
# every program the tests start (trainers, CLIs, multi-host workers): a program compiled before,
# here or there, is read back instead of compiled again (a digits training run: 26 s -> 14 s).
# Executables are read back as compiled, so results are the same bit for bit.
_OWN_XLA_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_XLA_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="swin_jax_tests_xla_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from swin_jax.difference import relative_difference  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
torch.set_num_threads(max(1, os.cpu_count() or 1))

FORWARD_TOL = 1e-5  # max|diff| <= 1e-5 * max(1, max|ref|), issue 2
GRAD_TOL = 1e-4  # max|diff| / max|ref| per tensor, issue 2

ROOT = Path(__file__).resolve().parents[1]
# the programs the tests run in a fresh process
PROGRAMS = {
    "swin-jax": [str(Path(sys.executable).with_name("swin-jax"))],  # the installed console script
    "train": [sys.executable, "-m", "train"],
    "python": [sys.executable],
}


def run_cli(program: str, *args: Any, env: Optional[dict] = None, cwd: Path = ROOT, timeout: float = 900,
            wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run a program of PROGRAMS with `args` (str()-ed) in a fresh process, its text output
    captured; `env` adds to this process's environment. Without `wait`, the started process,
    its stderr merged into stdout."""
    command = [*PROGRAMS[program], *map(str, args)]
    env = {**os.environ, **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def rel_diff(reference, ours, floor: float = 1.0) -> float:
    """The suite's difference measure, swin_jax.difference.relative_difference: max|ours - ref| /
    max(floor, max|ref|), inf where either side holds a NaN or inf; shapes must be equal."""
    assert np.shape(reference) == np.shape(ours), (np.shape(reference), np.shape(ours))
    return relative_difference(reference, ours, floor)


def nchw_to_nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


def build_case(case_id: str, name: str, overrides: dict, batch: int, seed: int = 0) -> SimpleNamespace:
    """One model in both frameworks with the same O(1) weights, and swin_jax's outputs."""
    import jax.numpy as jnp

    import swin_jax
    import swin_torch_ref

    ref_model = swin_torch_ref.randomize_parameters(swin_torch_ref.create_model(name, **overrides), seed=seed)
    model = swin_jax.create_model(name, **overrides)
    params = swin_jax.from_torch(model, ref_model.state_dict())
    cfg = model.config
    images = torch.randn(batch, cfg.in_chans, *cfg.img_size, generator=torch.Generator().manual_seed(seed + 1))
    x = jnp.asarray(nchw_to_nhwc(images))
    inter = jax.jit(lambda p, x: model.apply({"params": p}, x, method="forward_intermediates"))(params, x)
    logits = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, x)
    return SimpleNamespace(name=name, overrides=overrides, id=case_id, ref_model=ref_model, images=images,
                           intermediates=[np.asarray(i) for i in inter], logits=np.asarray(logits))


def check_case(case: SimpleNamespace, torch_model, reference: str, record) -> None:
    """Every intermediate and the logits of `torch_model` against swin_jax's, within FORWARD_TOL."""
    from swin_jax.parity import torch_outputs

    family = case.ref_model.config.family
    ref_inter, ref_logits = torch_outputs(torch_model, case.images, case.ref_model.config)
    assert len(ref_inter) == len(case.intermediates)
    label = f"{family} forward {case.id} vs {reference}"
    for i, (r, o) in enumerate(zip(ref_inter, case.intermediates, strict=True)):
        diff = record(label, rel_diff(r, o))
        assert diff <= FORWARD_TOL, f"intermediate {i}: {diff:.3e}"
    diff = record(label, rel_diff(ref_logits, case.logits))
    assert diff <= FORWARD_TOL, f"logits: {diff:.3e}"


def timm_model(name: str, **overrides):
    """A timm model on the plain (unfused) attention path, in eval mode."""
    import timm

    model = timm.create_model(name, pretrained=False, **overrides).eval()
    fused = [n for n, m in model.named_modules() if getattr(m, "fused_attn", False)]
    assert not fused, f"timm uses fused attention in {fused[:3]}"
    return model


def randomize_jax_params(params, seed: int):
    """swin_torch_ref.randomize_parameters' recipe on a Flax params tree: kernels std
    1/sqrt(fan_in), norm scales 1 + N(0, 0.5), logit scales U(0, 2 log 100), everything else
    N(0, 1)."""
    flat, tree = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(flat))
    out = []
    for (path, leaf), key in zip(flat, keys):
        leaf_name = path[-1].key
        noise = jax.random.normal(key, leaf.shape, leaf.dtype)
        if leaf_name == "kernel":
            out.append(noise / np.sqrt(np.prod(leaf.shape[:-1])))
        elif leaf_name == "scale":
            out.append(1.0 + 0.5 * noise)
        elif leaf_name == "logit_scale":
            out.append(2 * np.log(100.0) * jax.random.uniform(key, leaf.shape, leaf.dtype))
        else:
            out.append(noise)
    return tree.unflatten(out)


def add_to_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Put `files` into a Hugging Face Hub cache as one new commit of `repo_id` on main, the way
    huggingface_hub stores downloads: blobs named by content hash, the snapshot's files linking
    to them, refs/main naming the commit. Returns the snapshot folder."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    digest = hashlib.sha1(repo_id.encode())
    for name, data in sorted(files.items()):
        digest.update(name.encode() + hashlib.sha256(data).digest())
    commit = digest.hexdigest()
    snapshot = folder / "snapshots" / commit
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snapshot


def safetensors_bytes(state_dict: dict) -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(np.asarray(v)) for k, v in state_dict.items()})


# Largest differences measured, printed at the end of the run (for the closing notes).
MEASURED: dict[str, float] = {}


@pytest.fixture
def record():
    """record(label, value): keep the largest value per label for the end-of-run summary."""

    def _record(label: str, value: float) -> float:
        MEASURED[label] = max(value, MEASURED.get(label, 0.0))
        return value

    return _record


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("largest differences measured")
        for label in sorted(MEASURED):
            terminalreporter.write_line(f"{label:<60} {MEASURED[label]:.3e}")


def pytest_sessionfinish(session, exitstatus):
    if _OWN_XLA_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
