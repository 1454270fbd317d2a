"""`swin-jax bench`: swin_jax (jitted) against timm (eager, and torch.compile on request) in one
process and one run, on the same inputs: img/s for the forward pass and a full train step
(forward, backward, AdamW; on the swin_jax side the trainer's own jitted `train.loop.train_step`,
imported only when a train step is measured), compile time, peak memory and model FLOPs utilisation against this
machine's own measured matmul peak. Reported as ratios, from runs timed in turn (swin_jax, timm,
swin_jax, timm, ...), since these machines are noisy.

Both frameworks run where JAX runs: on a GPU backend timm moves to CUDA, `--dtype bfloat16`
means autocast (AMP) there and bf16 compute with fp32 parameters in swin_jax, memory is device
memory, and the MFU is taken against the GPU's measured matmul peak in that dtype. float32
matmuls run as TF32 on both sides there (XLA:GPU's default; torch is set to match).

A tool above the library: it times the trainer's step, so it lives beside the trainer, and
`swin_jax` never imports it (only the `swin-jax bench` command does, when it runs). Importing it
changes nothing in the process and loads neither the trainer nor timm: those are imported by the
functions that use them. On a GPU, call `leave_gpu_memory_to_torch()` before JAX starts its
backend, as the command does."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np


def leave_gpu_memory_to_torch() -> None:
    """Stop JAX from preallocating GPU memory (unless XLA_PYTHON_CLIENT_PREALLOCATE is set):
    on a GPU JAX would otherwise take 75% of the card when its backend starts, before timm
    allocates anything. Effective only before JAX starts its backend (its first device use), so
    `swin-jax bench` calls it first, and the memory probe's child process too."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


@dataclass
class Result:
    model: str
    framework: str  # swin_jax | timm eager | timm compile
    mode: str  # forward | train
    batch: int
    img_size: tuple[int, int]
    dtype: str
    img_per_s: float = 0.0
    compile_s: float = 0.0
    # CPU: peak rise of resident memory from before the model was built. GPU: device memory, for
    # swin_jax what XLA allocates for the program (arguments, outputs, temporaries), for torch
    # the peak of its allocator over the run
    peak_mem_mib: float = 0.0
    isolated_peak_mib: float = -1.0  # the same, measured alone in a fresh process (-1: not measured)
    gflop_per_img: float = 0.0
    mfu: float = 0.0  # achieved FLOP/s / measured matmul peak
    times_s: list[float] = field(default_factory=list)
    note: str = ""
    xla_buffers: dict = field(default_factory=dict)  # swin_jax: `buffer_sizes` of the compiled program


class Measured(NamedTuple):
    """A measurement and its runner, which runs what was measured once more (untimed: for
    `run_bench`'s interleaved rounds). The runner holds the model and its buffers: drop it to
    free them."""

    result: Result
    run: Callable[[], None]


class PeakMemory:
    """Peak rise of this process's resident set size while the block runs (sampled every 2 ms).
    Memory a previous measurement freed inside the process can be reused without showing."""

    def start(self) -> "PeakMemory":
        import psutil

        self._proc = psutil.Process()
        self.base = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def _timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def interleaved_times(runs: Sequence[Callable[[], Any]], repeats: int) -> list[list[float]]:
    """Time `repeats` rounds of every run in turn (A B A B ...): a slow phase of a noisy machine
    then falls on all of them alike, instead of on whichever happened to be measured then."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for fn, out in zip(runs, times):
            out.extend(_timed(fn, 1))
    return times


def torch_device() -> str:
    """Where timm runs: CUDA when JAX's default backend is a GPU, else the CPU."""
    import jax
    import torch

    if jax.default_backend() != "gpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError("JAX runs on a GPU but this torch has no CUDA: install a CUDA build of torch to "
                           "compare on the same card, or run with JAX_PLATFORMS=cpu")
    return "cuda"


def _match_jax_float32_matmuls(device: str) -> None:
    """On CUDA, let torch use TF32 for float32 matmuls and convolutions, as XLA:GPU does with
    JAX's default precision (torch's own default for matmuls is full float32)."""
    if device == "cuda":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def _synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def matmul_peak_gflops(size: Optional[int] = None, seconds: float = 2.0, dtype: str = "float32") -> dict[str, float]:
    """This machine's matmul throughput in `dtype` (2048^3 on a CPU, 8192^3 on a GPU), measured
    with both frameworks; the peak is the larger. Random operands: zeros run faster on GPUs."""
    import jax
    import jax.numpy as jnp
    import torch

    device = torch_device()
    size = size or (8192 if device == "cuda" else 2048)
    a = np.random.default_rng(0).normal(size=(size, size)).astype(np.float32)
    flops = 2 * size**3
    mm = jax.jit(lambda x: x @ x)
    x = jnp.asarray(a, dtype=dtype)
    mm(x).block_until_ready()
    jax_best, start = float("inf"), time.time()
    while time.time() - start < seconds:
        t = time.perf_counter()
        mm(x).block_until_ready()
        jax_best = min(jax_best, time.perf_counter() - t)
    _match_jax_float32_matmuls(device)
    xt = torch.from_numpy(a).to(device=device, dtype=getattr(torch, dtype))
    torch_best, start = float("inf"), time.time()
    while time.time() - start < seconds:
        t = time.perf_counter()
        xt @ xt
        _synchronize(device)
        torch_best = min(torch_best, time.perf_counter() - t)
    return {"jax": flops / jax_best / 1e9, "torch": flops / torch_best / 1e9,
            "peak": max(flops / jax_best, flops / torch_best) / 1e9, "size": size, "dtype": dtype}


def forward_flops(fn: Callable[..., Any], *args: Any) -> float:
    """FLOPs of the jitted `fn(*args)`, counted on the traced program; where this jaxlib gives
    no count before compiling, XLA:CPU's count of the compiled program (a GPU's compiled count
    leaves out its library matmuls); 0.0 (no MFU) where neither is available."""
    import jax

    cost = fn.lower(*args).cost_analysis()
    if not cost:
        try:  # compiles for the CPU only: nothing runs there
            shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=jax.sharding.SingleDeviceSharding(
                jax.devices("cpu")[0])) for a in jax.tree.leaves(args)]
            cpu_args = jax.tree.unflatten(jax.tree.structure(args), shapes)
            cost = fn.lower(*cpu_args).compile().cost_analysis()
        except RuntimeError:  # e.g. JAX_PLATFORMS without "cpu"
            return 0.0
    return float(cost["flops"]) if cost and "flops" in cost else 0.0


def _model_flops(model: Any, params: Any, x: Any) -> float:
    """The model's forward FLOPs with every attention written out: a fused attention kernel is
    a custom call whose FLOPs the count would leave out."""
    import jax

    config = model.config
    written = model.clone(config=dataclasses.replace(
        config, kernels=dataclasses.replace(config.kernels, attention="custom_vjp")))
    return forward_flops(jax.jit(lambda p, x: written.apply({"params": p}, x)), params, x)


def trainer_step(model: Any, state: Any, fsdp: bool = False, devices: Optional[int] = None) -> tuple[Any, dict, Any]:
    """The trainer's own step (train.loop), jitted as `python -m train` compiles it: AdamW with
    the recipe's weight-decay mask and clipping, mixup / cutmix, label smoothing and EMA off
    (timm's side runs plain cross-entropy), dropout keys drawn as in training; over a mesh of the
    first `devices` devices (with `fsdp` all by default), the state sharded (`fsdp`) or
    replicated, else on one device. `state` (arrays or
    their shapes) gives the state's structure. Returns (the step: (state, batch, mix) -> state,
    the no-mixing `mix`, the (state, batch) shardings the step takes, or None on one device)."""
    import jax
    import numpy as np
    import optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from train.classification import ClassificationTask
    from train.config import ClassificationRecipe
    from train.data import mix_parameters
    from train.loop import train_step
    from train.sharding import DATA_AXIS, state_shardings

    schedule = optax.constant_schedule(1e-4)
    no_mix = mix_parameters(0, 0, model.config.img_size, mixup=0.0, cutmix=0.0, switch_prob=0.5)
    task = ClassificationTask(ClassificationRecipe(label_smoothing=0.0))  # plain cross-entropy, as timm's side
    step = functools.partial(train_step, task=task, model=model, tx=bench_optimizer(), schedule=schedule,
                             key=jax.random.PRNGKey(0), ema_decay=0.0, accum_steps=1)
    if not fsdp and devices is None:
        return jax.jit(lambda s, b, m: step(s, b, m)[0], donate_argnums=0), no_mix, None
    mesh = Mesh(np.array(jax.devices()[:devices]), (DATA_AXIS,))
    placement, batch_sharding = state_shardings(state, mesh, fsdp), NamedSharding(mesh, P(DATA_AXIS))
    fn = jax.jit(lambda s, b, m: step(s, b, m)[0], donate_argnums=0, out_shardings=placement,
                 in_shardings=(placement, batch_sharding, NamedSharding(mesh, P())))
    return fn, no_mix, (placement, batch_sharding)


def bench_optimizer() -> Any:
    """The bench's optimizer: the trainer's AdamW at a constant rate (weight decay 0.05, clip 5)."""
    import optax

    from train.optim import make_optimizer

    return make_optimizer(optax.constant_schedule(1e-4), 0.05, 5.0)


def buffer_sizes(compiled: Any) -> dict[str, int]:
    """XLA's memory analysis of a compiled program in bytes: `argument`, `output`, `temp`
    (temporaries: the activations a train step keeps for its backward pass live here), `alias`
    (outputs written over donated arguments) and `total` (what the program holds at once);
    empty where the backend does not report it."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return {}
    sizes = {k: int(getattr(analysis, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp", "alias")}
    sizes["total"] = sizes["argument"] + sizes["output"] + sizes["temp"] - sizes["alias"]
    return sizes


def step_memory(model: Any, batch: int, compiler_options: Optional[dict] = None, fsdp: bool = False,
                devices: Optional[int] = None) -> dict[str, int]:
    """`buffer_sizes` of the trainer's step for `model` and `batch` images (per device: over the
    first `devices` devices, or all with `fsdp`; the state sharded with `fsdp`, else
    replicated), compiled from abstract values
    (nothing of the model's size is allocated) with `compiler_options` (default: the model's,
    `swin_jax.compiler_options`, as the trainer compiles it)."""
    import jax
    import jax.numpy as jnp

    from swin_jax.compiler import compiler_options as model_options
    from swin_jax.models import param_shapes
    from train.loop import create_train_state

    if compiler_options is None:
        compiler_options = model_options(model)
    state = jax.eval_shape(lambda p: create_train_state(p, bench_optimizer(), ema=False), param_shapes(model))
    fn, no_mix, _ = trainer_step(model, state, fsdp, devices)
    images = jax.ShapeDtypeStruct((batch, *model.config.img_size, model.config.in_chans), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    return buffer_sizes(fn.lower(state, {"images": images, "labels": labels}, no_mix).compile(compiler_options))


def memory_table(models: Sequence[str], batch: int, remats: Sequence[str] = ("none", "block"),
                 log: Callable[[str], None] = print, time_steps: int = 2) -> list[dict]:
    """The trainer's step for each model x remat x placement: XLA's buffers per device, on one
    device and on every device with the state replicated or sharded (FSDP), and the step
    time on one device (median of `time_steps` after a warm-up). On a CPU, get several devices
    with XLA_FLAGS=--xla_force_host_platform_device_count=N (they share the cores, so only the
    one-device step time means anything)."""
    import jax
    import jax.numpy as jnp

    import swin_jax
    from train.loop import create_train_state

    n = jax.device_count()
    placements = [(1, False)] + ([(n, False), (n, True)] if n > 1 else [])
    rows = []
    for name in models:
        for remat in remats:
            model = swin_jax.create_model(name, remat=remat, drop_path_rate=0.0)
            for devices, fsdp in placements:
                buffers = step_memory(model, batch, fsdp=fsdp, devices=None if devices == 1 else devices)
                row = dict(model=name, remat=remat, devices=devices, state="fsdp" if fsdp else "replicated",
                           batch=batch, **{f"{k}_mib": v / 2**20 for k, v in buffers.items()}, step_s=float("nan"))
                if devices == 1 and time_steps:
                    state = [create_train_state(swin_jax.init_params(model, 0), bench_optimizer(), ema=False)]
                    fn, no_mix, _ = trainer_step(model, state[0])
                    images = jax.random.normal(jax.random.PRNGKey(0), (batch, *model.config.img_size, model.config.in_chans))
                    data = {"images": images, "labels": jnp.zeros((batch,), jnp.int32)}
                    compiled = fn.lower(state[0], data, no_mix).compile(swin_jax.compiler_options(model))

                    def run() -> None:
                        state[0] = compiled(state[0], data, no_mix)
                        jax.block_until_ready(state[0])

                    run()
                    row["step_s"] = statistics.median(_timed(run, time_steps))
                    del state, compiled
                log(f"  {name} remat {remat}, {devices} device(s) {row['state']}: {row['total_mib']:.0f} MiB per device"
                    f" (temporaries {row['temp_mib']:.0f}), step {row['step_s']:.2f} s")
                rows.append(row)
    return rows


def memory_markdown(rows: Sequence[dict]) -> str:
    """`memory_table`'s rows as a markdown table."""
    head = "| model | remat | devices | state | arguments MiB | temporaries MiB | total per device MiB | step s (1 device) |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        step = "-" if r["step_s"] != r["step_s"] else f"{r['step_s']:.2f}"
        lines.append(f"| {r['model']} | {r['remat']} | {r['devices']} | {r['state']} | {r['argument_mib']:.0f} | "
                     f"{r['temp_mib']:.0f} | {r['total_mib']:.0f} | {step} |")
    return "\n".join(lines)


def head_for_training(name: str, train: bool) -> dict[str, int]:
    """Overrides that give a headless model (DINOv2, SigLIP, ...: num_classes 0) a 1000-class
    classifier for the train step, on both sides; nothing for a classifier or the forward pass."""
    from swin_jax.configs import get_config

    return {"num_classes": 1000} if train and get_config(name).num_classes <= 0 else {}


def bench_jax(name: str, batch: int, img_size: tuple[int, int], dtype: str, train: bool,
              repeats: int, compiler_options: Optional[dict[str, str]] = None, remat: str = "none",
              fsdp: bool = False) -> Measured:
    """swin_jax's forward pass (or the trainer's train step) for `name`, compiled, warmed up and
    timed `repeats` times."""
    import jax
    import jax.numpy as jnp

    import swin_jax

    jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    on_gpu = jax.default_backend() == "gpu"
    mem = PeakMemory().start()  # from before the model exists: params, optimizer state, buffers
    model = swin_jax.create_model(name, img_size=img_size, dtype=jdtype, drop_path_rate=0.0, remat=remat,
                                  **head_for_training(name, train))
    params = swin_jax.init_params(model, 0)
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, *img_size, model.config.in_chans))
    result = Result(name, "swin_jax", "train" if train else "forward", batch, img_size, dtype)
    fwd = jax.jit(lambda p, x: model.apply({"params": p}, x))
    if train:
        from train.loop import create_train_state
        from train.sharding import put_state

        batch_arrays = {"images": x, "labels": jnp.zeros((batch,), jnp.int32)}
        state = [create_train_state(params, bench_optimizer(), ema=False)]
        fn, no_mix, placement = trainer_step(model, state[0], fsdp)
        if placement is not None:  # placed as the step takes them
            state[0] = put_state(state[0], placement[0])
            batch_arrays = jax.device_put(batch_arrays, placement[1])
        t = time.perf_counter()
        compiled = fn.lower(state[0], batch_arrays, no_mix).compile(compiler_options)
        result.compile_s = time.perf_counter() - t

        def run() -> None:
            state[0] = compiled(state[0], batch_arrays, no_mix)
            jax.block_until_ready(state[0])
    else:
        t = time.perf_counter()
        compiled = fwd.lower(params, x).compile(compiler_options)
        result.compile_s = time.perf_counter() - t

        def run() -> None:
            compiled(params, x).block_until_ready()

    # model FLOPs, counted on the traced program (a GPU's compiled cost analysis leaves out the
    # library matmuls); a train step counts forward + backward (2x forward), the usual MFU convention
    result.gflop_per_img = (3 if train else 1) * _model_flops(model, params, x) / batch / 1e9
    swin_jax.trim_host_memory()  # as the trainer does after compiling
    buffers = buffer_sizes(compiled)
    xla_mib = 0.0
    if buffers:  # what XLA allocates for the step: arguments, outputs, temporaries
        xla_mib = buffers["total"] / 2**20
        result.note = (f"XLA buffers {xla_mib:.0f} MiB (arguments {buffers['argument'] / 2**20:.0f}, "
                       f"outputs {buffers['output'] / 2**20:.0f}, temporaries {buffers['temp'] / 2**20:.0f})")
        result.xla_buffers = buffers
    run()  # warm-up
    result.times_s = _timed(run, repeats)
    mem.stop()
    # JAX's device peak counter cannot be reset, so in-process the GPU figure is the program's
    # own buffers; `memory_probe` reads the device peak in a fresh process
    result.peak_mem_mib = xla_mib if on_gpu else mem.mib
    result.img_per_s = batch / statistics.median(result.times_s)
    return Measured(result, run)


def bench_timm(name: str, batch: int, img_size: tuple[int, int], dtype: str, train: bool, repeats: int,
               compile: bool) -> Measured:
    """timm's forward pass (or an AdamW train step) for `name`, eager or under torch.compile,
    warmed up and timed `repeats` times."""
    os.environ.setdefault("TIMM_FUSED_ATTN", "1")  # timm's fastest default path
    import timm
    import torch

    device = torch_device()
    _match_jax_float32_matmuls(device)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # as timm's train.py sets it
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    mem = PeakMemory().start()  # from before the model exists, as for swin_jax
    model = timm.create_model(name, pretrained=False, img_size=img_size, drop_path_rate=0.0,
                              **head_for_training(name, train)).to(device)
    net = torch.compile(model) if compile else model
    result = Result(name, "timm compile" if compile else "timm eager", "train" if train else "forward", batch,
                    img_size, dtype)
    x = torch.randn(batch, 3, *img_size, device=device)
    # bfloat16: autocast (AMP) with float32 parameters, as timm's train.py --amp-dtype bfloat16
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    if train:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
        labels = torch.zeros(batch, dtype=torch.long, device=device)

        def run() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = torch.nn.functional.cross_entropy(net(x), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            _synchronize(device)
    else:
        model.eval()

        def run() -> None:
            with torch.no_grad(), autocast:
                net(x)
            _synchronize(device)

    t = time.perf_counter()
    run()  # first call: compilation for torch.compile, warm-up for eager
    result.compile_s = time.perf_counter() - t if compile else 0.0
    run()
    result.times_s = _timed(run, repeats)
    mem.stop()
    result.peak_mem_mib = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else mem.mib
    result.img_per_s = batch / statistics.median(result.times_s)
    return Measured(result, run)


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def memory_probe(spec: dict) -> float:
    """Run one measurement in this (fresh) process and return its peak memory in MiB: on a CPU
    the rise of its resident memory over what it held after importing jax, torch and timm, on a
    GPU the peak of the framework's device allocator over what it held before."""
    import importlib

    modules = {name: importlib.import_module(name) for name in ("jax", "torch", "timm")}  # loaded before the baseline
    on_gpu = torch_device() == "cuda"
    jax_device = modules["jax"].devices()[0]
    base = jax_device.memory_stats()["bytes_in_use"] if on_gpu else _rss_bytes()
    args = (spec["model"], spec["batch"], tuple(spec["img_size"]), spec["dtype"], spec["mode"] == "train", 1)
    if spec["framework"] == "swin_jax":
        bench_jax(*args, compiler_options=spec.get("compiler_options"), remat=spec.get("remat", "none"),
                  fsdp=spec.get("fsdp", False))
        if on_gpu:
            return (jax_device.memory_stats()["peak_bytes_in_use"] - base) / 2**20
    else:
        result = bench_timm(*args, compile=spec["framework"] == "timm compile").result
        if on_gpu:
            return result.peak_mem_mib
    return (_peak_rss_bytes() - base) / 2**20


def _peak_rss_bytes() -> int:
    """This process's peak resident set: VmHWM on Linux (ru_maxrss there can carry the peak of
    the parent that forked this process), ru_maxrss elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def isolated_peak_mib(spec: dict) -> float:
    """`memory_probe` in a child process: a clean peak for one framework, unaffected by memory
    that earlier measurements freed inside the benchmarking process (JAX's GPU memory left to
    torch there, as by `swin-jax bench`)."""
    code = ("import json, sys, train.bench as b; b.leave_gpu_memory_to_torch(); "
            "print(b.memory_probe(json.loads(sys.argv[1])))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run_bench(models: Sequence[str], batch: int, img_size: Optional[tuple[int, int]], dtype: str,
              modes: Sequence[str], repeats: int, torch_compile: bool, log: Callable[[str], None] = print,
              memory: bool = False, compiler_options: Optional[dict[str, str]] = None,
              plain_xla: bool = False, remat: str = "none", fsdp: bool = False) -> dict:
    """Measure every model x mode for swin_jax and timm; returns the JSON-able report.

    `memory` also measures each peak alone in a child process. The swin_jax programs compile
    with `swin_jax.compiler_options(model)` (what the trainer uses; XLA's defaults with
    `plain_xla`), updated by `compiler_options` (e.g. {"xla_cpu_experimental_ynn_fusion_type": ...}).
    `remat` is the swin_jax models' activation remat (`swin_jax.configs.REMAT_CHOICES`); timm
    runs without gradient checkpointing. `fsdp` runs swin_jax's train step as `python -m train --fsdp`
    does, over every device with the state sharded (its XLA buffers are per device). On a GPU,
    call `leave_gpu_memory_to_torch()` first, before JAX starts its backend."""
    import jax
    import timm
    import torch

    import swin_jax

    extra_options, options_used = compiler_options or {}, {}

    peak = matmul_peak_gflops(dtype=dtype)
    log(f"matmul peak ({dtype}, {peak['size']}^3): jax {peak['jax']:.1f}, torch {peak['torch']:.1f} GFLOP/s")
    results: list[Result] = []
    failures: list[str] = []
    for name in models:
        size = tuple(img_size or swin_jax.get_config(name).img_size)
        config = swin_jax.get_config(name, remat=remat)
        compiler_options = {**({} if plain_xla else swin_jax.compiler_options(config)), **extra_options}
        options_used[name] = compiler_options
        for mode in modes:
            train = mode == "train"
            runs = [lambda: bench_jax(name, batch, size, dtype, train, 1, compiler_options, remat, fsdp),
                    lambda: bench_timm(name, batch, size, dtype, train, 1, False)]
            if torch_compile:
                runs.append(lambda: bench_timm(name, batch, size, dtype, train, 1, True))
            done: list[Measured] = []
            for fn in runs:  # set up, warm up and time once each, then time them interleaved
                try:
                    done.append(fn())
                except Exception as err:  # e.g. torch.compile without a working toolchain
                    failures.append(f"{name} {mode}: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}")
                    log(f"  {name} {mode}: a measurement failed: {type(err).__name__}: {str(err)[:200]}")
            measured = [m.result for m in done]
            for r, times in zip(measured, interleaved_times([m.run for m in done], repeats)):
                r.times_s, r.img_per_s = times, batch / statistics.median(times)
            del done  # the runners: let the models and their buffers go
            if memory:
                for r in measured:
                    spec = {"model": name, "framework": r.framework, "mode": mode, "batch": batch,
                            "img_size": list(size), "dtype": dtype, "compiler_options": compiler_options,
                            "remat": remat, "fsdp": fsdp}
                    try:
                        r.isolated_peak_mib = isolated_peak_mib(spec)
                    except subprocess.CalledProcessError as err:
                        log(f"  {name} {mode} {r.framework}: the memory probe failed: {err.stderr[-300:]}")
            flops = next((r.gflop_per_img for r in measured if r.framework == "swin_jax"), 0.0)
            for r in measured:
                r.gflop_per_img = flops
                r.mfu = r.img_per_s * flops / peak["peak"]
                log(f"  {name:<30} {mode:<8} {r.framework:<13} {r.img_per_s:8.2f} img/s")
            results.extend(measured)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind,
                    "torch_device": torch_device(), "matmul_gflops": peak,
                    # XLA:GPU's default for float32 dots, matched on the torch side
                    "float32_matmuls": "tf32" if torch_device() == "cuda" else "float32"},
        "compiler_options": options_used,  # per model
        "remat": remat,
        "fsdp": fsdp,
        "versions": {"jax": jax.__version__, "torch": torch.__version__, "timm": timm.__version__,
                     "swin_jax": swin_jax.__version__},
        "results": [asdict(r) for r in results],
        "failures": failures,  # measurements that raised: the command fails on any
    }


def _buffers_cell(buffers: dict) -> str:
    """XLA's buffers of the compiled program: arguments / outputs / temporaries (MiB)."""
    if not buffers:
        return "-"
    return "/".join(f"{buffers[k] / 2**20:.0f}" for k in ("argument", "output", "temp"))


def table(report: dict, markdown: bool = False) -> str:
    """The results as a text (or markdown) table with swin_jax / timm-eager ratios."""
    rows = report["results"]
    head = ["model", "mode", "framework", "img/s", "ratio", "compile s", "peak MiB", "alone MiB", "GFLOP/img", "MFU",
            "XLA arg/out/temp MiB"]
    body = []
    for r in rows:
        base = next((b for b in rows if b["model"] == r["model"] and b["mode"] == r["mode"]
                     and b["framework"] == "timm eager"), None)
        ratio = r["img_per_s"] / base["img_per_s"] if base and base["img_per_s"] else float("nan")
        body.append([r["model"], r["mode"], r["framework"], f"{r['img_per_s']:.2f}", f"{ratio:.2f}",
                     f"{r['compile_s']:.1f}", f"{r['peak_mem_mib']:.0f}",
                     f"{r['isolated_peak_mib']:.0f}" if r["isolated_peak_mib"] >= 0 else "-", f"{r['gflop_per_img']:.2f}",
                     f"{100 * r['mfu']:.0f}%", _buffers_cell(r.get("xla_buffers") or {})])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [30, 9, 14, 9, 7, 10, 10, 10, 10, 7, 22]
    fmt = lambda row: "".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt(head)] + [fmt(row) for row in body])


def write_json(report: dict, path: str | Path) -> Path:
    from swin_jax.checkpoint_io import write_atomic

    return write_atomic(Path(path), lambda f: f.write(json.dumps(report, indent=1).encode()))
