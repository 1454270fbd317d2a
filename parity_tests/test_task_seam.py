"""The trainer's seam carries what segmentation needs, shown with a test task
(`batchnorm_task.py`: a CNN with BatchNorm, a confusion-matrix evaluation, its own export):
model state through the step, evaluation, EMA, checkpoints, resume, FSDP and hosts; array
evaluation sums totalled over devices and hosts; a per-task export and PyTorch check. Also the
layer-decay groups found inside a model's backbone subtree."""
import json
import socket
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import rel_diff, run_cli

import swin_jax
from batchnorm_task import BatchNormTask, TinyBatchNormNet, TinyConfig
from train.config import ClassificationRecipe
from train.loop import create_train_state, eval_step, eval_variables, train_step
from train.optim import layer_decay_scales, lr_schedule, make_optimizer

TASK_SCRIPT = Path(__file__).with_name("batchnorm_task.py")
RUN = ["--preset", "digits", "--max-steps", "6", "--batch-size", "64", "--ckpt-every", "3"]


def _run(out: Path, *extra: str, devices: int = 1, wait: bool = True, env: dict | None = None):
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **(env or {})}
    return run_cli("python", TASK_SCRIPT, *RUN, "--out-dir", out, *extra, env=env, wait=wait)


def _result(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _variables(out: Path) -> dict:
    with np.load(out / "variables.npz") as f:
        return dict(f)


def _bn_setup(accum_steps: int = 1):
    model = TinyBatchNormNet(TinyConfig())
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
    schedule = lr_schedule(1e-3, 1e-3, 1e-3, 0, 10)
    tx = make_optimizer(schedule, 0.05, 0.0, accum_steps=accum_steps)
    rng = np.random.default_rng(0)
    batches = [{"images": jnp.asarray(rng.normal(2.0, 3.0, size=(16, 32, 32, 1)).astype(np.float32)),
                "labels": jnp.asarray(rng.integers(0, 10, 16)), "weights": jnp.ones(16)} for _ in range(2)]
    return model, variables, schedule, tx, batches


NO_MIX = dict(lam=np.float32(1.0), cutmix=np.bool_(False), box=np.zeros(4, np.int32))
TASK = BatchNormTask(ClassificationRecipe(label_smoothing=0.0))


def _step(model, tx, schedule, ema_decay: float, accum_steps: int = 1):
    return jax.jit(lambda s, b: train_step(s, b, NO_MIX, task=TASK, model=model, tx=tx, schedule=schedule,
                                           key=jax.random.PRNGKey(0), ema_decay=ema_decay, accum_steps=accum_steps))


def test_model_state_through_the_step_evaluation_and_ema():
    """batch_stats ride in the train state: the step updates them from the batch's statistics as
    the model's own BatchNorm does, EMA leaves them alone (the same with and without it),
    evaluation reads the running statistics."""
    model, variables, schedule, tx, (batch, _) = _bn_setup()
    stats = {"batch_stats": variables["batch_stats"]}
    runs = {}
    for decay in (0.0, 0.5):
        state = create_train_state(variables["params"], tx, ema=decay > 0, model_state=stats)
        runs[decay], _ = _step(model, tx, schedule, decay)(state, batch)
    # the model's own update of its running statistics, with the params before the step
    _, expected = model.apply(variables, batch["images"], train=True, mutable=["batch_stats"])
    for decay, new in runs.items():  # (fused into the jitted step, rounding may move by an ulp)
        for got, want in zip(jax.tree.leaves(new.model_state), jax.tree.leaves(dict(expected)), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    for got, want in zip(jax.tree.leaves(runs[0.0].model_state), jax.tree.leaves(runs[0.5].model_state), strict=True):
        np.testing.assert_array_equal(got, want)  # EMA on or off: the same statistics
    assert np.abs(np.asarray(runs[0.0].model_state["batch_stats"]["bn"]["mean"])).max() > 1e-2  # they moved
    np.testing.assert_array_equal(jax.tree.leaves(runs[0.5].ema_params)[0],
                                  0.5 * jax.tree.leaves(variables["params"])[0] + 0.5 * jax.tree.leaves(runs[0.5].params)[0])
    # evaluation: the running statistics, so the same params give other sums with the new statistics
    old, new = ({"params": variables["params"], **s} for s in (stats, runs[0.0].model_state))
    sums = [eval_step(v, batch, task=TASK, model=model) for v in (old, new)]
    assert float(sums[0]["loss_sum"]) != float(sums[1]["loss_sum"])
    assert eval_variables(runs[0.5], ema=True)["params"] is runs[0.5].ema_params
    assert eval_variables(runs[0.5], ema=True)["batch_stats"] is runs[0.5].model_state["batch_stats"]


def test_running_statistics_update_per_micro_batch():
    """--accum-steps 2: the params move once per two batches, the running statistics after each
    batch (as torch's BatchNorm does under gradient accumulation)."""
    model, variables, schedule, tx, batches = _bn_setup(accum_steps=2)
    state = create_train_state(variables["params"], tx, ema=False, model_state={"batch_stats": variables["batch_stats"]})
    step = _step(model, tx, schedule, 0.0, accum_steps=2)
    expected = dict(variables)
    for i, batch in enumerate(batches):
        state, _ = step(state, batch)
        _, updated = model.apply(expected, batch["images"], train=True, mutable=["batch_stats"])
        expected = {"params": variables["params"], **updated}
        for got, want in zip(jax.tree.leaves(state.model_state), jax.tree.leaves(updated), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)  # a batch's update is ~0.1
        moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                           jax.tree.leaves(variables["params"]))]
        assert any(moved) == (i == 1), (i, moved)  # the optimizer steps on the second micro-batch only


def test_layer_decay_counts_layers_inside_the_backbone():
    """A segmentor-shaped tree {backbone: a Swin classifier's params, decode_head: ...}: inside the
    backbone the scales are the bare Swin's, shifted one layer down; everything outside is the
    head, at the full rate. Anchored at the root, the same tree would be all head."""
    model = swin_jax.create_model("swin_tiny_patch4_window7_224", embed_dim=24, depths=(2, 2), num_heads=(1, 2),
                                  img_size=32, patch_size=4, window_size=4, num_classes=0)
    swin = swin_jax.param_shapes(model)
    head = {"conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 48, 16), jnp.float32)}}
    bare = jax.tree.leaves(layer_decay_scales(swin, "swin", 0.5))
    nested = layer_decay_scales({"backbone": swin, "decode_head": head}, "swin", 0.5, backbone=("backbone",))
    assert jax.tree.leaves(nested["decode_head"]) == [1.0]
    with pytest.raises(ValueError, match="no parameter under the backbone path"):
        layer_decay_scales(swin, "swin", 0.5, backbone=("backbone",))
    np.testing.assert_allclose(jax.tree.leaves(nested["backbone"]), [0.5 * s for s in bare])
    assert min(bare) < 0.1
    rooted = layer_decay_scales({"backbone": swin, "decode_head": head}, "swin", 0.5)
    assert set(jax.tree.leaves(rooted)) == {1.0}  # what the old anchoring did: the backbone taken for head


@pytest.fixture(scope="module")
def one_device(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bn1")
    result = _run(out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, _result(result.stdout)


def test_the_task_exports_and_checks_its_own_weights(one_device):
    """The task's export, not classification's: its .npz (running statistics included) and its
    PyTorch check, which agrees with JAX's evaluation; the confusion matrix sums to the count and
    its trace is the correct count."""
    out, result = one_device
    assert not (out / "model.safetensors").exists() and (out / "variables.npz").exists()
    confusion = np.array(result["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == result["total"] == 360
    assert np.trace(confusion) == result["correct"] and confusion.sum(axis=1).min() > 0
    assert result["torch_correct"] == result["correct"]
    variables = _variables(out)
    assert np.abs(variables["batch_stats/bn/mean"]).max() > 1e-3  # the running statistics moved


def test_resume_restores_the_model_state(one_device, tmp_path):
    """3 steps, then --resume to 6: the same params and running statistics as 6 straight."""
    out, straight = one_device
    first = _run(tmp_path, "--max-steps", "3")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = _run(tmp_path, "--resume")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resumed from step 3" in second.stdout
    resumed, reference = _variables(tmp_path), _variables(out)
    assert set(resumed) == set(reference)
    for name in reference:
        np.testing.assert_array_equal(resumed[name], reference[name], err_msg=name)
    assert _result(second.stdout)["confusion"] == straight["confusion"]


def _compare(reference: dict, other: dict, label: str) -> None:
    assert set(reference) == set(other)
    worst = max(rel_diff(reference[k], other[k], floor=0) for k in reference)
    assert worst <= 1e-5, (label, worst)


SHARD_ALL = {"BATCHNORM_TASK_FSDP_MIN_ELEMENTS": "1"}  # the tiny network's arrays sharded too
SPLIT_STATISTICS = {"batch_stats/bn/mean": ["data"], "batch_stats/bn/var": ["data"]}  # each split over the devices


def test_fsdp_on_four_devices_equals_one(one_device, tmp_path):
    """--fsdp over 4 devices, every array the device count divides sharded (the running statistics
    too), BatchNorm's statistics from the global batch: the params, the statistics and the
    confusion matrix of one device."""
    out, reference = one_device
    result = _run(tmp_path, "--fsdp", devices=4, env=SHARD_ALL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "fsdp: training state sharded over 4 devices" in result.stdout
    assert _result(result.stdout)["model_state_placement"] == SPLIT_STATISTICS
    _compare(_variables(out), _variables(tmp_path), "fsdp 4 vs 1")
    assert _result(result.stdout)["confusion"] == reference["confusion"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_hosts_of_two_devices_equal_one(one_device, tmp_path):
    """2 processes of 2 devices, the state sharded across them (--fsdp): the evaluation's confusion
    matrix, totalled over both hosts, and the running statistics gathered for the export equal
    one device's."""
    out, reference = one_device
    address = f"127.0.0.1:{_free_port()}"
    procs = [_run(tmp_path, "--fsdp", "--coordinator", address, "--num-processes", "2", "--process-id", str(i),
                  devices=2, wait=False, env=SHARD_ALL) for i in range(2)]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-2000:] + outputs[1][-2000:]
    assert _result(outputs[0])["model_state_placement"] == SPLIT_STATISTICS
    _compare(_variables(out), _variables(tmp_path), "2 hosts x 2 devices vs 1")
    assert _result(outputs[0])["confusion"] == reference["confusion"]


def test_resume_reads_a_checkpoint_saved_before_the_model_state(tmp_path):
    """A run saved by the trainer before its state held `model_state` (four fields) resumes: its
    params and optimizer state come back, with an empty model state."""
    import orbax.checkpoint as ocp

    from train.config import PRESETS, make_config
    from train.loop import TrainingRun, _TrainStateWithoutModelState
    from train.task import task_for

    values = {**PRESETS["digits"], "out_dir": str(tmp_path), "max_steps": 2, "export": False}
    first = TrainingRun(make_config(**values), task_for(make_config(**values)), log=lambda *a: None)
    first.set_up()
    first.restore()
    old = first.state
    params = jax.tree.map(lambda x: x + 1.0, old.params)  # not what a fresh set-up makes
    legacy = _TrainStateWithoutModelState(old.step + 7, params, old.opt_state, old.ema_params)
    first.manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(legacy),
                                                  data=ocp.args.JsonSave({"next_step": 7, **first.identity})))
    first.manager.wait_until_finished()
    cfg = make_config(**values, resume=True)
    second = TrainingRun(cfg, task_for(cfg), log=lambda *a: None)
    second.set_up()
    second.restore()
    assert second.start == 7 and int(second.state.step) == 7 and second.state.model_state == {}
    for got, want in zip(jax.tree.leaves(second.state.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(got, want)
