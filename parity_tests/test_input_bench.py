"""`swin-jax bench --input` (train/input_bench.py): the report's structure, and that both
pipelines deliver every image of every epoch in the expected layout. Timings are not checked."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("timm")
pytest.importorskip("grain")


@pytest.fixture(autouse=True)
def timm_posterize_restored():
    """The bench patches timm's posterize for Pillow 13 (process-wide); undo it after each
    test, so that the transforms tests still see timm as it is."""
    from timm.data import auto_augment

    saved = dict(auto_augment.NAME_TO_OP)
    yield
    auto_augment.NAME_TO_OP.clear()
    auto_augment.NAME_TO_OP.update(saved)
    if hasattr(auto_augment, "_swin_jax_patched"):
        del auto_augment._swin_jax_patched


def test_input_bench_report_on_a_tiny_folder(tmp_path):
    from train.input_bench import make_jpeg_folder, paired_ratios, run_input_bench, skip_for, table, tail_for

    folder = make_jpeg_folder(tmp_path / "data", classes=2, per_class=8, size=(96, 72))
    batch, batches, repeats, size = 4, 2, 1, (64, 64)
    # "full" has every part of both pipelines: RandAugment, forced colour jitter, erasing
    report = run_input_bench(folder, workers=(0, 1), batch=batch, batches=batches, img_size=size, recipes=("full",),
                             repeats=repeats, train_overhead=True, train_batch=4, train_steps=1,
                             transform_images=4, log=lambda m: None, progress=False)

    assert report["kind"] == "input"
    assert report["settings"]["files"] == 16 and report["settings"]["batch"] == batch
    assert set(report["transform_only"]["full"]) == {"swin_jax", "timm"}
    results = report["results"]
    assert [(r["workers"], r["framework"]) for r in results] == [(0, "swin_jax"), (0, "timm"), (1, "swin_jax"),
                                                                 (1, "timm")]
    for r in results:
        epoch = skip_for(r["workers"]) + batches + tail_for(r["workers"])  # a warm-up epoch, then `repeats`
        assert r["batches"] == (repeats + 1) * epoch
        assert r["images"] == r["batches"] * batch
        expected = (batch, *size, 3) if r["framework"] == "swin_jax" else (batch, 3, *size)  # NHWC / NCHW
        assert tuple(r["batch_shape"]) == expected and r["dtype"] == "float32"
        assert len(r["rates"]) == repeats and r["img_per_s"] > 0
        assert r["main_cpu_ms"] >= 0 and r["worker_cpu_ms"] >= 0 and r["startup_s"] > 0
    assert report["scaling"] == {}  # no 1 -> 2 worker pair measured

    overhead = report["train_overhead"]
    assert [r["workers"] for r in overhead] == [0, 1] and all(r["recipe"] == "full" for r in overhead)
    for r in overhead:
        assert len(r["pipeline_step_times_s"]) == len(r["in_memory_step_times_s"]) == repeats
        assert r["pipeline_step_s"] > 0 and r["in_memory_step_s"] > 0 and math.isfinite(r["overhead"])

    rounds = {r["workers"]: r["rates"] for r in results if r["framework"] == "swin_jax"}
    theirs = {r["workers"]: r["rates"] for r in results if r["framework"] == "timm"}
    expected = {k: float(np.median(np.divide(rounds[k], theirs[k]))) for k in rounds}
    assert paired_ratios(results) == {"full": pytest.approx(expected)}

    text = table(report, markdown=True)
    assert text.startswith("| recipe | workers | swin_jax img/s | timm img/s | ratio |")
    assert text.count("\n| full |") == 2 and "% of step time lost to input" in text
    assert f"ratio per round, full (swin_jax / timm in the same round; median): 0 worker(s) {expected[0]:.2f}" in text


def test_time_epoch_times_the_steady_batches_only(monkeypatch):
    """The rate counts the `timed` batches between the arrival of batch skip - 1 and that of
    batch skip + timed - 1, whatever the start-up before and the drained buffers after: here a
    slow start, batches every 0.5 s, then a tail that arrives at once (as timm's prefetcher
    hands out its held-back batch) must read 2 batches/s, not more."""
    import itertools

    from train import input_bench

    class Batch:
        shape, dtype = (4, 8, 8, 3), "float32"

    arrivals = [0.0, 3.0, 4.0, 4.5, 5.0, 5.5, 6.0, 6.0001]  # start, then 7 batches
    clock = iter(arrivals)
    monkeypatch.setattr(input_bench.time, "perf_counter", lambda: next(clock))
    cpu = itertools.count()
    monkeypatch.setattr(input_bench.CpuClock, "__init__", lambda self: None)
    monkeypatch.setattr(input_bench.CpuClock, "read", lambda self: (float(next(cpu)), {}))

    r = input_bench.time_epoch(iter([Batch()] * 7), batch=4, skip=2, timed=4, tail=1)
    assert r.rate == pytest.approx(4 * 4 / (6.0 - 4.0))  # batches 2..5 over arrivals 1 -> 5
    assert r.first_s == pytest.approx(3.0) and r.images == 28 and r.shape == Batch.shape
    with pytest.raises(RuntimeError, match="gave 7 batches, expected 6"):
        clock = iter(arrivals)
        monkeypatch.setattr(input_bench.time, "perf_counter", lambda: next(clock))
        input_bench.time_epoch(iter([Batch()] * 7), batch=4, skip=2, timed=4, tail=0)


def test_scaling_pairs_one_and_two_workers():
    from train.input_bench import PipelineResult, scaling

    def result(workers: int, framework: str, rate: float) -> PipelineResult:
        return PipelineResult("basic", workers, framework, 8, (32, 32), img_per_s=rate)

    rows = [result(1, "swin_jax", 100.0), result(2, "swin_jax", 180.0), result(1, "timm", 100.0),
            result(2, "timm", 150.0), result(0, "timm", 50.0)]
    assert scaling(rows) == {"basic": {"swin_jax": pytest.approx(1.8), "timm": pytest.approx(1.5)}}


def test_timm_posterize_keeps_no_bits_under_pillow_13():
    """timm's RandAugment calls ImageOps.posterize(img, 0) at PosterizeIncreasing magnitude 10,
    which Pillow 13 rejects; the bench's patch gives the all-black image older Pillows gave."""
    from PIL import Image

    from timm.data import auto_augment

    from train.input_bench import patch_timm_posterize

    patch_timm_posterize()
    img = Image.fromarray(np.full((4, 4, 3), 200, np.uint8))
    assert not np.asarray(auto_augment.NAME_TO_OP["PosterizeIncreasing"](img, 0)).any()
    assert np.asarray(auto_augment.NAME_TO_OP["Posterize"](img, 1)).max() == 128
