"""Numerical parity of swin_jax against the PyTorch models, from Python or `swin-jax parity`."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from swin_jax.configs import MODEL_CONFIGS, get_config
from swin_jax.convert import from_torch, infer_num_classes
from swin_jax.difference import nonfinite, relative_difference
from swin_jax.layouts import to_numpy
from swin_jax.models import create_model
from swin_jax.arguments import InputError

REFERENCES = ("ref", "timm")


@dataclass
class ParityRow:
    """One compared output: its shape, max|ref|, max|ours - ref| and the relative difference, or
    why it could not be compared (`problem`: missing on one side, shapes differ, NaN / inf)."""

    name: str
    shape: tuple[int, ...]
    max_ref: float
    max_abs_diff: float
    rel_diff: float  # max|Δ| / max(1, max|ref|) (swin_jax.difference), the tolerances' measure; inf if not compared
    problem: str = ""


@dataclass
class ParityReport:
    model: str
    img_size: tuple[int, int]
    weights: str
    reference: str
    tolerance: float
    rows: list[ParityRow] = field(default_factory=list)

    @property
    def max_rel_diff(self) -> float:
        """The largest relative difference; inf when any row could not be compared or none was."""
        return max((row.rel_diff for row in self.rows), default=math.inf)

    @property
    def problems(self) -> list[ParityRow]:
        return [row for row in self.rows if row.problem]

    @property
    def passed(self) -> bool:
        """Every output compared, all finite, each within the tolerance (a NaN tolerance fails)."""
        return bool(self.rows) and not self.problems and self.max_rel_diff <= self.tolerance

    def table(self) -> str:
        """The report as a text table, one line per output, verdict last."""
        head = (f"{self.model} at {self.img_size[0]}x{self.img_size[1]}, weights: {self.weights}, "
                f"reference: {self.reference}, fp32, matmul precision highest")
        lines = [head, f"{'output':<10}{'shape':<22}{'max|ref|':>12}{'max|diff|':>12}{'rel diff':>12}"]
        for r in self.rows:
            if r.problem:
                lines.append(f"{r.name:<10}{str(r.shape):<22}  not compared: {r.problem}")
            else:
                lines.append(f"{r.name:<10}{str(r.shape):<22}{r.max_ref:>12.4g}{r.max_abs_diff:>12.3e}"
                             f"{r.rel_diff:>12.3e}")
        if self.problems:
            first = self.problems[0]
            more = f" ({len(self.problems) - 1} more outputs not compared)" if len(self.problems) > 1 else ""
            lines.append(f"FAIL: {first.name}: {first.problem}{more}")
        elif not self.rows:
            lines.append("FAIL: no outputs were compared")
        else:
            verdict, sign = ("PASS", "<=") if self.passed else ("FAIL", ">")
            lines.append(f"{verdict}: largest relative difference {self.max_rel_diff:.3e} {sign} tolerance "
                         f"{self.tolerance:.1e}")
        return "\n".join(lines)


def compare(name: str, reference: Optional[np.ndarray], ours: Optional[np.ndarray]) -> ParityRow:
    """One output compared; None on a side is an output that side did not return."""
    if reference is None or ours is None:
        side, other = ("the reference", ours) if reference is None else ("swin_jax", reference)
        return ParityRow(name, tuple(np.shape(other)), math.nan, math.nan, math.inf, f"{side} returned no such output")
    reference, ours = np.asarray(reference, np.float64), np.asarray(ours, np.float64)
    if reference.shape != ours.shape:
        return ParityRow(name, reference.shape, math.nan, math.nan, math.inf,
                         f"shapes differ: reference {reference.shape}, swin_jax {ours.shape}")
    bad = [f"{side}: {count}" for side, count in (("the reference", nonfinite(reference)), ("swin_jax", nonfinite(ours)))
           if count.count]
    if bad:
        return ParityRow(name, reference.shape, math.nan, math.nan, math.inf, "; ".join(bad))
    return ParityRow(name, reference.shape, float(np.abs(reference).max(initial=0.0)),
                     float(np.abs(reference - ours).max(initial=0.0)), relative_difference(reference, ours))


def build_torch_model(name: str, reference: str, **overrides: Any) -> Any:
    """The PyTorch model to compare with: our swin_torch_ref or timm's (plain attention path)."""
    if reference == "ref":
        import swin_torch_ref

        return swin_torch_ref.create_model(name, **overrides)
    if reference == "timm":
        os.environ.setdefault("TIMM_FUSED_ATTN", "0")
        import timm

        model = timm.create_model(name, pretrained=False, **overrides).eval()
        for module in model.modules():  # the unfused path computes what the paper writes
            if hasattr(module, "fused_attn"):
                module.fused_attn = False
        return model
    raise InputError(f"unknown reference {reference!r}; choose from {REFERENCES}")


def torch_outputs(model: Any, images_nchw: Any, config: Any) -> tuple[list[np.ndarray], np.ndarray]:
    """(intermediates, logits) of a PyTorch model, intermediates as swin_jax returns them: the
    output of every Swin stage (NHWC) or ViT block (tokens), captured with forward hooks."""
    import torch

    captured: list[np.ndarray] = []
    modules = list(getattr(model, config.intermediates))
    hooks = [m.register_forward_hook(lambda _m, _in, out: captured.append(out.numpy())) for m in modules]
    try:
        with torch.no_grad():
            logits = model(images_nchw).numpy()
    finally:
        for hook in hooks:
            hook.remove()
    return captured, logits


def check_parity(
    name: str,
    checkpoint: Optional[str | Path] = None,
    img_size: Optional[tuple[int, int]] = None,
    reference: str = "ref",
    seed: int = 0,
    batch: int = 2,
    tolerance: float = 1e-5,
    layout: Optional[str] = None,
    use_ema: bool = False,
    **overrides: Any,
) -> ParityReport:
    """Run `name` in swin_jax and in PyTorch on the same images and weights and compare every
    stage output and the logits (fp32, matmul precision highest).

    Weights: a `checkpoint` file in any layout the converter reads (`layout`, or detected from
    its keys; `.msgpack` for swin_jax params), or,
    without one, random parameters at O(1) scale (`swin_torch_ref.randomize_parameters`). The
    class count is read from the checkpoint's classifier; a training checkpoint's EMA weights are
    compared with `use_ema`.

    The report passes only when every output was compared (both sides returned it, in the same
    shape), every value on both sides is finite and every relative difference is within
    `tolerance`.
    """
    import torch

    import swin_torch_ref
    from swin_jax.checkpoint_io import read_checkpoint
    from swin_jax.convert import get_layout, to_torch

    if name not in MODEL_CONFIGS:
        get_config(name)  # raises the unknown-model error
    if img_size is not None:
        overrides["img_size"] = tuple(img_size)
    state_dict = None
    if checkpoint is not None:
        read = read_checkpoint(checkpoint, layout, use_ema)
        state_dict, layout = read.state_dict, read.layout
        overrides.setdefault("num_classes", infer_num_classes(state_dict, MODEL_CONFIGS[name][0], layout))
    jax_model = create_model(name, **overrides)
    torch_model = build_torch_model(name, reference, **overrides)
    if state_dict is not None:
        params = from_torch(jax_model, state_dict, layout)  # checks every key and shape, names what is wrong
        chosen = read.describe_choice()
        weights = f"{checkpoint} ({layout} layout{', ' + chosen if chosen else ''})"
        expected = {k: tuple(v.shape) for k, v in torch_model.state_dict().items()}
        kept = {k: v for k, v in state_dict.items() if not get_layout(layout).is_ignored(k)}
        if layout == "timm" and {k: tuple(v.shape) for k, v in kept.items()} == expected:
            torch_state = {k: torch.as_tensor(to_numpy(v)) for k, v in kept.items()}  # the file itself
        else:  # another layout, or a resampled grid: PyTorch gets the converted weights
            torch_state = {k: torch.from_numpy(v) for k, v in to_torch(jax_model, params).items()}
    else:
        torch_state = swin_torch_ref.randomize_parameters(swin_torch_ref.create_model(name, **overrides), seed).state_dict()
        params = from_torch(jax_model, torch_state)
        weights = f"random O(1) (seed {seed})"
    torch_model.load_state_dict(torch_state, strict=True)

    cfg = jax_model.config
    images = torch.randn(batch, cfg.in_chans, *cfg.img_size, generator=torch.Generator().manual_seed(seed))
    ref_stages, ref_logits = torch_outputs(torch_model, images, cfg)
    x = jnp.asarray(images.permute(0, 2, 3, 1).numpy())
    with jax.default_matmul_precision("highest"):
        stages = jax.jit(lambda p, x: jax_model.apply({"params": p}, x, method="forward_intermediates"))(params, x)
        logits = jax.jit(lambda p, x: jax_model.apply({"params": p}, x))(params, x)

    report = ParityReport(name, cfg.img_size, weights, reference, tolerance)
    label = "stage" if cfg.family.startswith("swin") else "block"
    count = max(len(ref_stages), len(stages))  # an output one side lacks is a failed row, not a skipped one
    pad = lambda outputs: list(outputs) + [None] * (count - len(outputs))
    report.rows = [compare(f"{label}{i}", r, o) for i, (r, o) in enumerate(zip(pad(ref_stages), pad(stages)))]
    if count == 0:  # every model has stages or blocks: comparing the logits alone is no check of them
        report.rows.append(ParityRow(f"{label}s", (), math.nan, math.nan, math.inf, f"neither side returned {label} outputs"))
    report.rows.append(compare("logits", ref_logits, logits))
    return report
