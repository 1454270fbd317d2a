"""The shared training loop, for every task (`train.task`): `create_train_state`, a pure
`train_step` and `eval_step`, jitted once with data-parallel shardings (batch split over a
'data' mesh axis, state replicated or FSDP-sharded); `train` runs the phases in order (set up,
restore, compile, run with its evaluations and checkpoints, finish, export), and the loop only
moves data, logs and checkpoints. What is task-specific (data, model, loss, evaluation, export) the
task supplies."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import swin_jax
from swin_jax.arguments import InputError, Terminated, check_address, check_output, rendezvous, run_command
from swin_jax.checkpoint_io import write_atomic
from train.config import TrainConfig
from train.logs import MetricsLog, StepLog
from train.optim import layer_decay_scales, lr_schedule, make_optimizer
from train.pipeline import BatchPlan, Batches, default_workers, host_batches, source_fingerprint, to_global, check_state
from train.sharding import DATA_AXIS, bytes_per_device, gather_to_host, put_state, state_shardings
from train.task import Task, prepare_images, sum_totals, task_for


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # batches seen
    params: Any
    opt_state: Any
    ema_params: Any  # {} when EMA is off
    model_state: Any  # the model's other collections (BatchNorm's batch_stats); {} for none


class Restored(NamedTuple):
    state: TrainState
    data: dict  # the input pipeline's state (`Batches.get_state`)


@flax.struct.dataclass
class _TrainStateWithoutModelState:
    """The train state as runs saved it before it held the model state (read on --resume)."""

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any


def create_train_state(params: Any, tx: optax.GradientTransformation, ema: bool,
                       model_state: Optional[dict] = None) -> TrainState:
    """Step 0: the optimizer state of `params`, their EMA copy (params only: running statistics
    are not averaged) and the model's non-parameter state."""
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params),
                      jax.tree.map(jnp.copy, params) if ema else {}, dict(model_state or {}))


def train_step(state: TrainState, batch: dict, step_inputs: Any, *, task: Task, model: Any,
               tx: optax.GradientTransformation, schedule: optax.Schedule, key: jax.Array, ema_decay: float,
               accum_steps: int, mean: tuple = (0.0,), std: tuple = (1.0,)) -> tuple[TrainState, dict]:
    """One batch (`images`, the task's targets, and `erase` / `erase_noise` when random erasing
    is on): images prepared on the device, the task's loss (forward with dropout / drop path,
    the model state updated), optimizer update, EMA of the params."""
    images = prepare_images(batch["images"], batch.get("erase"), batch.get("erase_noise"), mean, std)
    batch = {**batch, "images": images}
    rngs = {"dropout": jax.random.fold_in(key, state.step)}

    def loss_fn(params: Any) -> tuple[jax.Array, dict]:
        return task.loss(model, {"params": params, **state.model_state}, batch, step_inputs, rngs)

    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema_decay > 0:
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, params)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "lr": schedule(state.step // accum_steps)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
                         model_state={**state.model_state, **model_state}), metrics


def eval_step(variables: dict, batch: dict, *, task: Task, model: Any, mean: tuple = (0.0,),
              std: tuple = (1.0,)) -> Any:
    """The task's evaluation sums over the batch's real (weight 1) examples."""
    batch = {**batch, "images": prepare_images(batch["images"], None, None, mean, std)}
    return task.eval_sums(model, variables, batch)


def eval_variables(state: TrainState, ema: bool) -> dict:
    """What evaluation and export run: the EMA params when EMA is on, with the model state as
    training left it (EMA averages params only; timm's ModelEmaV2/V3 would average BatchNorm's
    running statistics too)."""
    return {"params": state.ema_params if ema else state.params, **state.model_state}


# ----- set-up helpers

def init_distributed(cfg: TrainConfig) -> None:
    """Join a multi-host run: coordinator, process count and id from the flags or the
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables."""
    address = cfg.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return
    count = cfg.num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "1"))
    index = cfg.process_id if cfg.process_id is not None else int(os.environ.get("JAX_PROCESS_ID", "0"))
    resolved = check_address(address, "--coordinator")  # before the wait: a bad address is no reason to wait
    if not 0 <= index < count:
        raise InputError(f"--process-id {index} is not below --num-processes {count}")
    if jax.config.jax_platforms in (None, "", "cpu") and count > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    print(f"process {index} of {count}: joining the run at {address} (waiting up to {cfg.init_timeout} s for "
          f"every process; --init-timeout)", flush=True)
    rendezvous(address, count, index, cfg.init_timeout, resolved=resolved)
    try:
        jax.distributed.initialize(address, num_processes=count, process_id=index,
                                   initialization_timeout=cfg.init_timeout)
    except Exception as err:  # jax's own error is a long C++ status; what failed is the joining
        detail = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise InputError(f"process {index} of {count} could not join the run at {address} within "
                         f"{cfg.init_timeout} s (--init-timeout): {detail[:300]}") from None



def compile_then_trim(fn: Any, *args: Any) -> Any:
    """The jitted `fn` compiled for `args`, with the memory the compiler freed handed back to the
    OS before the program first runs (otherwise its buffers are placed beside that memory and the
    process peak keeps both; see swin_jax.trim_host_memory)."""
    compiled = fn.lower(*args).compile()
    swin_jax.trim_host_memory()
    return compiled


def _drop_closed_loop_callbacks() -> None:
    """When orbax gives up on a damaged checkpoint, tensorstore still completes the reads it had
    started, and each completion calls into orbax's event loop, closed by then (as soon as the
    restore raises, so possibly before its caller sees the error): Python reports each as an
    unraisable RuntimeError, a traceback under the error line. They say nothing about the
    checkpoint; only those are dropped. Installed once, before a restore."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_callbacks", False):
        return

    def hook(unraisable: Any) -> None:
        if not (isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value)):
            previous(unraisable)

    hook.drops_closed_loop_callbacks = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def saved_steps(folder: Path) -> list[int]:
    """The steps of the orbax checkpoints in `folder` (its numbered sub-folders)."""
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir()) if folder.is_dir() else []


RUN_OUTPUTS = ("checkpoints", "metrics.csv", "steps.csv", "curves.png", "config.json")  # besides the task's export


def remove_run_outputs(out: Path, task: Task) -> None:
    """What a run writes into its folder (`RUN_OUTPUTS` and the task's export files), for
    --overwrite; other files stay."""
    for name in (*RUN_OUTPUTS, *task.export_files):
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def check_run_folder(cfg: TrainConfig, task: Task) -> None:
    """Refuse, before anything is created, a run that would mix with or lose another's files:
    an `out_dir` holding an earlier run's checkpoints (unless `resume` continues it or `overwrite`
    replaces it), a `resume` with nothing to resume, an export onto the `init` file."""
    out = Path(cfg.out_dir)
    check_output(out, "--out-dir", {}, folder=True)
    if cfg.resume and cfg.overwrite:
        raise InputError("--resume continues the run in --out-dir and --overwrite replaces it: pass one of them")
    steps = saved_steps(out / "checkpoints")
    if cfg.resume and not steps:
        raise InputError(f"--resume: {out / 'checkpoints'} holds no checkpoint to resume from; leave out --resume to "
                         f"start a new run")
    if steps and not (cfg.resume or cfg.overwrite):
        raise InputError(f"--out-dir {out} already holds a run's checkpoints (steps {', '.join(map(str, steps[-3:]))}): "
                         f"pass --resume to continue that run, or --overwrite to replace it")
    if cfg.init and cfg.export:
        for name in task.export_files:
            check_output(out / name, "the export (--out-dir)", {"--init": cfg.init})


# ----- the run, phase by phase


class TrainingRun:
    """One training job, its phases in the order `train` calls them: `set_up` (data, model,
    optimizer, mesh, initial state), `restore` (the run folder, a resume), `compile`, `run`
    (steps, with `evaluate` and `checkpoint` on schedule), `finish` (last checkpoint, final
    evaluation) and `export`. What each phase makes, the later ones read from `self`."""

    def __init__(self, cfg: TrainConfig, task: Task, log: Callable[..., None] = print):
        self.cfg, self.task = cfg, task
        self.main_process = jax.process_index() == 0
        self.log = log if self.main_process else (lambda *a, **k: None)
        self.out = Path(cfg.out_dir).absolute()  # created once the data, model and weights are known to be good
        self.skipped_files: dict[str, int] = {}  # unreadable file -> times skipped
        self.compiled_eval: Optional[Any] = None  # eval_fn, compiled at the first evaluation
        self.bar: Any = None

    # ----- set up

    def set_up(self) -> None:
        cfg, task, log = self.cfg, self.task, self.log
        recipe = task.recipe
        self.img_size = task.input_size(cfg)
        self.data = data = task.load_data(cfg, self.img_size)
        self.model = model = task.build_model(cfg, data)
        self.inputs = task.inputs(cfg, data)
        self.workers = default_workers() if cfg.workers is None else cfg.workers
        self.train_plan = BatchPlan(len(data.train), cfg.batch_size, cfg.seed, True, jax.process_index(),
                                    jax.process_count())
        self.test_plan = BatchPlan(len(data.test), cfg.batch_size, cfg.seed, False, jax.process_index(),
                                   jax.process_count())
        self.steps_per_epoch = steps_per_epoch = self.train_plan.steps_per_epoch
        if steps_per_epoch == 0:
            raise InputError(f"{len(data.train)} training images make no batch of {cfg.batch_size}")
        self.total_steps = cfg.epochs * steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        opt_steps = max(1, cfg.epochs * steps_per_epoch // cfg.accum_steps)
        self.schedule = lr_schedule(recipe.lr, recipe.warmup_lr, recipe.min_lr,
                                    int(recipe.warmup_epochs * steps_per_epoch / cfg.accum_steps), opt_steps)
        lr_scales = None
        if recipe.layer_decay > 0:
            backbone, family = task.layer_groups(model)
            lr_scales = layer_decay_scales(task.variable_shapes(model)["params"], family, recipe.layer_decay,
                                           backbone)
            scales = jax.tree.leaves(lr_scales)
            log(f"layer decay {recipe.layer_decay}: {len(set(scales))} layers, learning-rate scales "
                f"{min(scales):.3g} (patch embedding) to {max(scales):.3g} (head)")
        self.tx = make_optimizer(self.schedule, recipe.weight_decay, recipe.clip_grad, cfg.accum_steps, lr_scales)

        self.mesh = Mesh(np.array(jax.devices()), (DATA_AXIS,))
        self.replicated, self.sharded = NamedSharding(self.mesh, P()), NamedSharding(self.mesh, P(DATA_AXIS))
        if cfg.batch_size % jax.device_count():
            raise InputError(f"batch size {cfg.batch_size} does not split over {jax.device_count()} devices")
        variables = task.initial_variables(cfg, model, log)
        params, model_state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
        new_state = functools.partial(create_train_state, tx=self.tx, ema=cfg.ema_decay > 0)
        # where each array lives
        self.placement = state_shardings(jax.eval_shape(new_state, params, model_state=model_state), self.mesh,
                                         cfg.fsdp)
        # the optimizer state and EMA are made in place, already split: the whole state never sits on one device
        self.state = jax.jit(new_state, out_shardings=self.placement)(
            put_state(jax.device_get(params), self.placement.params),
            model_state=put_state(jax.device_get(model_state), self.placement.model_state))
        del params, variables
        if cfg.fsdp:
            held = max(bytes_per_device(self.state).values())
            total = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(self.state))
            log(f"fsdp: training state sharded over {jax.device_count()} devices: {held / 2**20:.1f} MiB per device "
                f"of {total / 2**20:.1f} MiB")
        # What the saved iterator state must match on resume (the batches are a function of these).
        self.identity = dict(seed=cfg.seed, batch_size=cfg.batch_size, train_examples=len(data.train),
                             train_source=source_fingerprint(data.train))

    # ----- restore

    def restore(self) -> None:
        """Make the run folder (after --overwrite clears the earlier run's outputs) and its
        checkpoint manager; with --resume, the state and the next step from its last checkpoint."""
        import orbax.checkpoint as ocp

        cfg, out = self.cfg, self.out
        if cfg.overwrite:  # only now: a run refused for another reason keeps the earlier one
            if self.main_process:
                remove_run_outputs(out, self.task)
            if jax.process_count() > 1:  # no process makes its checkpoint folder while process 0 clears it
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices("swin_jax: earlier run removed")
        out.mkdir(parents=True, exist_ok=True)
        self.manager = manager = ocp.CheckpointManager(out / "checkpoints", options=ocp.CheckpointManagerOptions(
            max_to_keep=cfg.keep, enable_async_checkpointing=False, create=True))
        self.start = 0
        if cfg.resume and manager.latest_step() is None:
            raise InputError(f"--resume: orbax finds no complete checkpoint in {out / 'checkpoints'}")
        if cfg.resume:
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self.state)
            _drop_closed_loop_callbacks()
            try:
                restored = self.restore_state(abstract)
            except Exception as err:  # orbax's errors name its internals, not the problem
                step = manager.latest_step()
                raise InputError(f"cannot resume from {out / 'checkpoints' / str(step)}: it does not hold "
                                 f"this run's training state and input-pipeline state ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'})") from err
            check_state(restored.data, self.identity)
            self.state, self.start = restored.state, int(restored.data["next_step"])
            if self.start != int(self.state.step):
                raise InputError(f"checkpoint {manager.latest_step()}: iterator at step {self.start}, state at "
                                 f"{int(self.state.step)}")
            self.log(f"resumed from step {self.start} (epoch {self.start / self.steps_per_epoch:.2f}) in "
                     f"{out / 'checkpoints'}")
        if self.main_process:
            config_text = json.dumps(dataclasses.asdict(cfg), indent=1, default=str)
            write_atomic(out / "config.json", lambda f: f.write(config_text.encode()))

    def restore_state(self, abstract: TrainState) -> "Restored":
        """The latest checkpoint's (state, data), onto `abstract`'s shapes and shardings. A run
        saved before the train state held the model state (four fields, no `model_state`) is
        restored as such when the model has none, and continues with an empty one."""
        import orbax.checkpoint as ocp

        step = self.manager.latest_step()

        def restore(target: Any) -> Restored:
            both = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
            return Restored(both.state, both.data)

        try:
            return restore(abstract)
        except ValueError:
            if abstract.model_state:
                raise
            legacy = _TrainStateWithoutModelState(abstract.step, abstract.params, abstract.opt_state,
                                                  abstract.ema_params)
            try:
                restored = restore(legacy)
            except Exception:
                raise ValueError(f"checkpoint {step} holds neither this run's training state nor an earlier "
                                 f"version's") from None
            old = restored.state
            return Restored(TrainState(old.step, old.params, old.opt_state, old.ema_params, {}), restored.data)

    # ----- compile

    def compile(self) -> None:
        """The jitted step and evaluation (compiled for their arguments at first use)."""
        cfg, task, model, inputs = self.cfg, self.task, self.model, self.inputs
        key = jax.random.PRNGKey(cfg.seed)
        options = task.compiler_options(model)
        self.step_fn = jax.jit(
            lambda s, b, m: train_step(s, b, m, task=task, model=model, tx=self.tx, schedule=self.schedule, key=key,
                                       ema_decay=cfg.ema_decay, accum_steps=cfg.accum_steps, mean=inputs.mean,
                                       std=inputs.std),
            in_shardings=(self.placement, self.sharded, self.replicated), out_shardings=(self.placement, self.replicated),
            donate_argnums=0, compiler_options=options)
        variables_placement = {"params": self.placement.params, **self.placement.model_state}
        self.eval_fn = jax.jit(lambda v, b: eval_step(v, b, task=task, model=model, mean=inputs.mean, std=inputs.std),
                               in_shardings=(variables_placement, self.sharded), out_shardings=self.replicated,
                               compiler_options=options)

    # ----- evaluate

    def to_device(self, host: dict) -> dict:
        return to_global(host, self.sharded)

    def note_skipped(self, indices: list[int], split: Any) -> None:
        for path in (split.files[i] for i in indices):
            if path not in self.skipped_files and self.main_process:  # each process counts its own share
                self.bar.write(f"skipped unreadable image {path}")
            self.skipped_files[path] = self.skipped_files.get(path, 0) + 1

    def evaluate(self, variables: dict) -> dict:
        """The task's summary of the readable test examples (their evaluation sums, totalled)."""
        data, plan = self.data, self.test_plan
        totals = None
        host = host_batches(data.test, plan, self.inputs.test_transform, 0, plan.steps_per_epoch, self.workers,
                            self.cfg.on_bad_image, loader=self.task.example_loader())
        with Batches(host, 0, plan.steps_per_epoch, self.to_device) as batches:
            for _, batch, skipped in batches:
                self.note_skipped(skipped, data.test)
                if self.compiled_eval is None:
                    self.compiled_eval = compile_then_trim(self.eval_fn, variables, batch)
                totals = sum_totals(totals, self.compiled_eval(variables, batch))
        if totals is None or float(totals["count"]) == 0:
            raise InputError(f"no readable test image among the {len(data.test)} of the test split")
        return self.task.summarize(totals)

    # ----- checkpoint

    def checkpoint(self, step: int, batches: Batches, force: bool = False) -> None:
        import orbax.checkpoint as ocp

        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(self.state),
                                                        data=ocp.args.JsonSave(batches.get_state())), force=force)

    # ----- run

    def run(self) -> None:
        """The steps from the restored one to the last: each batch through the step, the loss
        checked and logged; checkpoints and evaluations on schedule."""
        from tqdm import tqdm

        cfg, task, out, data = self.cfg, self.task, self.out, self.data
        start, total_steps, steps_per_epoch = self.start, self.total_steps, self.steps_per_epoch
        metrics_log = self.metrics_log = MetricsLog(out / "metrics.csv", start, task.metric_fields,
                                                    write=self.main_process)
        step_log = StepLog(out / "steps.csv", start, write=self.main_process)
        self.bar = bar = tqdm(total=total_steps, initial=start, unit="step", disable=not self.main_process,
                              dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 15.0)  # logs: a line every 15 s
        losses, window_start, seen = [], time.time(), 0
        self.run_start = time.time()
        host = host_batches(data.train, self.train_plan, self.inputs.train_transform, start, total_steps, self.workers,
                            cfg.on_bad_image, erase_capacity=self.inputs.erase_capacity,
                            loader=task.example_loader())
        self.batches = batches = Batches(host, start, total_steps, self.to_device, self.identity)
        step_fn = self.step_fn
        try:
            for step, batch, skipped in batches:
                self.note_skipped(skipped, data.train)
                step_inputs = task.step_inputs(cfg, self.img_size, step)
                if step == start:
                    step_fn = compile_then_trim(step_fn, self.state, batch, step_inputs)
                self.state, metrics = step_fn(self.state, batch, step_inputs)
                loss = float(metrics["loss"])
                if not math.isfinite(loss):
                    bar.close()
                    last = self.manager.latest_step()
                    raise TrainingDiverged(
                        f"loss is {loss} at step {step} (epoch {step // steps_per_epoch}); stopped without saving. "
                        f"Last good checkpoint: {'none' if last is None else f'step {last}'} in {out / 'checkpoints'}; "
                        f"resume from it (--resume) with a lower --lr or a --clip-grad")
                losses.append(loss)
                step_log.add(step + 1, loss, float(metrics["lr"]), float(metrics["grad_norm"]))
                seen += cfg.batch_size
                bar.update(1)
                bar.set_postfix(epoch=step // steps_per_epoch, loss=f"{loss:.4f}", lr=f"{float(metrics['lr']):.2e}",
                                img_s=f"{seen / max(time.time() - window_start, 1e-9):.0f}")
                done = step + 1
                epoch_end = done % steps_per_epoch == 0 or done == total_steps
                if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or (not cfg.ckpt_every and epoch_end):
                    self.checkpoint(done, batches)
                if epoch_end:
                    summary = self.evaluate(eval_variables(self.state, cfg.ema_decay > 0))
                    epoch = done / steps_per_epoch
                    metrics_log.add(epoch=f"{epoch:.3g}", step=done, train_loss=f"{np.mean(losses):.5f}",
                                    **task.metric_row(summary), lr=f"{float(metrics['lr']):.3e}",
                                    seconds=f"{time.time() - self.run_start:.1f}",
                                    img_per_s=f"{seen / max(time.time() - window_start, 1e-9):.1f}")
                    if self.main_process:
                        task.plot_curves(metrics_log.rows, out / "curves.png")
                        bar.write(f"epoch {epoch:.3g}: train loss {np.mean(losses):.4f}, {task.describe(summary)}")
                    losses, window_start, seen = [], time.time(), 0
        except (KeyboardInterrupt, Terminated):  # a preemption, say: say where --resume picks up
            bar.close()
            last = self.manager.latest_step()
            self.log(f"stopped by {'SIGTERM' if sys.exc_info()[0] is Terminated else 'Ctrl-C'} at step "
                     f"{batches.next_step}; "
                     + (f"the last good checkpoint is step {last} in {out / 'checkpoints'}: --resume continues from it"
                        if last is not None else "no checkpoint was saved yet"))
            raise
        finally:
            batches.close()
            step_log.close()
        bar.close()

    # ----- finish and export

    def finish(self) -> dict:
        """The last checkpoint (unless the run just saved it) and the final evaluation."""
        if self.manager.latest_step() != int(self.state.step):
            self.checkpoint(int(self.state.step), self.batches, force=True)
        self.manager.wait_until_finished()
        self.final_variables = eval_variables(self.state, self.cfg.ema_decay > 0)
        self.summary = self.evaluate(self.final_variables)
        steps = int(self.state.step)
        result = dict(steps=steps, **self.summary, seconds=time.time() - self.run_start, out_dir=str(self.out),
                      skipped_images=sum(self.skipped_files.values()))
        self.words = (f"done: {steps} steps ({steps / self.steps_per_epoch:.3g} epochs) in {result['seconds']:.0f}s; "
                      f"{self.task.describe_final(self.summary)}")
        if self.skipped_files:
            self.words += (f"; {len(self.skipped_files)} unreadable image file(s) skipped "
                           f"{sum(self.skipped_files.values())} time(s)")
        return result

    def export(self, result: dict) -> dict:
        """The task's export of the final weights (with its PyTorch check), by process 0."""
        if self.cfg.export:
            variables = gather_to_host(self.final_variables)  # every process takes part when the params are sharded
            if self.main_process:
                entries, words = self.task.export(self.cfg, self.model, variables, self.data, self.inputs, self.out,
                                                  self.summary)
                result.update(entries)
                self.words += f"; {words}"
        self.log(self.words)
        return result


def train(cfg: TrainConfig, log: Any = print, task: Optional[Task] = None) -> dict:
    """Run (or resume) a training job; returns the final metrics. `task`: the task's object
    (default: the one `cfg.model` trains with, holding `cfg.recipe`)."""
    task = task or task_for(cfg)
    cfg = dataclasses.replace(cfg, recipe=task.recipe)  # the recipe the run follows is the task's
    check_run_folder(cfg, task)
    init_distributed(cfg)
    run = TrainingRun(cfg, task, log)
    run.set_up()
    run.restore()
    run.compile()
    run.run()
    return run.export(run.finish())


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m train` / `swin-jax train`."""
    from train.config import parse_config

    cfg = parse_config(argv)

    def work() -> int:
        try:
            train(cfg)
        except TrainingDiverged as err:
            print(f"swin-jax train: stopped: {err}", flush=True)
            return 1
        return 0

    return run_command("swin-jax train", work, stream=sys.stdout)  # the run's log is on stdout too
