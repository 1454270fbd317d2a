"""The seam between the shared training loop (`train.loop`) and a task (`train.classification`).

The loop owns everything every task shares: devices and hosts, the optimizer, the jitted step
and evaluation, checkpoints and resume, logs. A task owns what makes it that task: its data and
transforms, the model, the loss and its targets, the evaluation sums and what they mean, and the
export of the trained weights with their PyTorch check. A second task is a second file with a
`Task` subclass, its recipe type, and one entry in `train.config.TASKS` (with `task_name` saying
which models train with it).

What crosses the seam:
- *variables*: the model's Flax collections, `{"params": ..., **model_state}`. Non-parameter
  state (BatchNorm's `batch_stats`) rides in the train state beside the params: the step
  updates it, evaluation reads it, checkpoints hold it, EMA leaves it alone.
- *step inputs*: a small replicated pytree drawn per step on the host (mixup's draws), a
  function of (seed, step) so a resumed run sees the same ones.
- *evaluation sums*: a pytree of arrays summed over the evaluation batches (a confusion matrix
  is one); each batch's sum is already global (over every device and host), the loop adds them
  up and the task's `summarize` turns the totals into numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from train.config import TrainConfig
    from train.data import Dataset


@dataclass(frozen=True)
class Inputs:
    """How a run's examples are made: the transforms the workers apply (called by the task's
    example loader, `Task.example_loader`), and the normalisation on the device."""

    train_transform: Any
    test_transform: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    erase_capacity: int  # > 0: random erasing boxes and noise come with the training batches

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """The host version of `prepare_images` without erasing (for the PyTorch check)."""
        if images.dtype != np.uint8:
            return images
        return ((images.astype(np.float32) / np.float32(255.0) - np.asarray(self.mean, np.float32))
                / np.asarray(self.std, np.float32))


def prepare_images(images: jax.Array, erase: Optional[jax.Array], erase_noise: Optional[jax.Array],
                   mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """The device half of the input pipeline. uint8 images (from files) are normalised as timm's
    ToTensor + Normalize do, `(x / 255 - mean) / std` in float32; float images (in memory) are
    already normalised. With `erase` ([B, 4] boxes top, bottom, left, right; empty when none),
    random erasing in timm's pixel mode: the box is filled with its noise from `erase_noise`
    ([B, capacity * C], the box's values row-major first, drawn in the workers)."""
    if images.dtype == jnp.uint8:
        images = (images.astype(jnp.float32) / 255.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    if erase is None:
        return images
    b, h, w, c = images.shape
    top, bottom, left, right = (erase[:, i, None, None, None] for i in range(4))
    rows, cols, chans = (jnp.arange(n).reshape(shape) for n, shape in
                         ((h, (1, h, 1, 1)), (w, (1, 1, w, 1)), (c, (1, 1, 1, c))))
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    # where each pixel of the box finds its value in the flat buffer (a gather: only the box's
    # values travel, and drawing a full image of noise on the device would cost more than the step's input)
    index = jnp.where(inside, ((rows - top) * (right - left) + (cols - left)) * c + chans, 0)
    fill = jnp.take_along_axis(erase_noise, index.reshape(b, -1), axis=1).reshape(images.shape)
    return jnp.where(inside, fill.astype(images.dtype), images)


def apply_model(model: Any, variables: dict, *args: Any, train: bool, rngs: Optional[dict] = None,
                **kwargs: Any) -> tuple[Any, dict]:
    """`model.apply` for a task's loss or evaluation: (outputs, updated model state). In
    training, the non-parameter collections (`batch_stats`) are mutable and come back updated;
    a model with none returns `{}`. In evaluation nothing changes."""
    state_names = [name for name in variables if name != "params"]
    if train and state_names:
        out, updates = model.apply(variables, *args, train=True, rngs=rngs, mutable=state_names, **kwargs)
        return out, dict(updates)
    if train:
        return model.apply(variables, *args, train=True, rngs=rngs, **kwargs), {}
    return model.apply(variables, *args, train=False, **kwargs), {}


class Task:
    """What a task supplies to the shared loop. Subclasses implement every method that raises
    NotImplementedError; the others have defaults that suit a model built by `swin_jax`."""

    name = "task"
    # metrics.csv's columns after epoch, step and train_loss (the task's `metric_row` fills them)
    metric_fields: tuple[str, ...] = ()
    # the files `export` writes into the run folder (refused over an --init file, removed by --overwrite)
    export_files: tuple[str, ...] = ()

    def __init__(self, recipe: Any):
        self.recipe = recipe

    # ----- set-up: data, inputs, model, initial variables

    def load_data(self, cfg: "TrainConfig", img_size: tuple[int, int]) -> "Dataset":
        raise NotImplementedError

    def input_size(self, cfg: "TrainConfig") -> tuple[int, int]:
        """The run's input size: `--img-size`, else the model's (an unknown model or option fails
        here, before any data is read)."""
        import swin_jax

        config = swin_jax.get_config(cfg.model, **cfg.model_args)
        return tuple(cfg.img_size or config.img_size)

    def build_model(self, cfg: "TrainConfig", data: "Dataset") -> Any:
        raise NotImplementedError

    def inputs(self, cfg: "TrainConfig", data: "Dataset") -> Inputs:
        raise NotImplementedError

    def example_loader(self) -> Optional[Callable[..., Any]]:
        """The grain map function class that turns a slot into an example: None for the pipeline's
        `LoadExample` (an image and an integer label), or a subclass of it that overrides `read`,
        `placeholder`, `transformed` and `from_array` (an image with its mask, say); it is built as
        `LoadExample(split, plan, transform, start_step, on_bad_image, erase_capacity)`."""
        return None

    def variable_shapes(self, model: Any) -> dict:
        """The model's variables as `jax.ShapeDtypeStruct`s, computed without allocating."""
        from swin_jax.models import dummy_input

        return dict(jax.eval_shape(model.init, jax.random.PRNGKey(0), dummy_input(model)))

    def initial_variables(self, cfg: "TrainConfig", model: Any, log: Callable[[str], None]) -> dict:
        raise NotImplementedError

    def layer_groups(self, model: Any) -> tuple[tuple[str, ...], str]:
        """(the path of the subtree of the params that holds the backbone, its family): layer-wise
        learning-rate decay counts layers inside that subtree; everything outside it is head."""
        return (), model.config.family

    def compiler_options(self, model: Any) -> dict:
        import swin_jax

        return swin_jax.compiler_options(model)

    # ----- the step and evaluation (pure, traced inside jit)

    def step_inputs(self, cfg: "TrainConfig", img_size: tuple[int, int], step: int) -> Any:
        """The step's host-drawn inputs (a pytree, replicated); a function of (seed, step)."""
        return {}

    def loss(self, model: Any, variables: dict, batch: dict, step_inputs: Any, rngs: dict) -> tuple[jax.Array, dict]:
        """(mean training loss of the batch, the updated model state) for a prepared batch."""
        raise NotImplementedError

    def eval_sums(self, model: Any, variables: dict, batch: dict) -> Any:
        """A pytree of arrays: the batch's sums over its real (weight 1) examples, with `count`
        (how many there were: an evaluation that counts none is an error)."""
        raise NotImplementedError

    # ----- what the sums mean, and the trained weights

    def summarize(self, totals: Any) -> dict:
        """The totals of `eval_sums` over the test split -> the task's numbers. They go into the
        run's result beside the loop's own entries, whose names they must not take: `steps`,
        `seconds`, `out_dir`, `skipped_images`."""
        raise NotImplementedError

    def metric_row(self, summary: dict) -> dict:
        """The metrics.csv cells of `metric_fields` for an evaluation."""
        raise NotImplementedError

    def describe(self, summary: dict) -> str:
        """One evaluation, for the epoch line: "test loss ..., test accuracy ..."."""
        raise NotImplementedError

    def describe_final(self, summary: dict) -> str:
        """The final evaluation, for the run's last line."""
        raise NotImplementedError

    def plot_curves(self, rows: list[dict], path: Path) -> None:
        """The run's curves as a PNG, from metrics.csv's rows."""
        raise NotImplementedError

    def export(self, cfg: "TrainConfig", model: Any, variables: dict, data: "Dataset", inputs: Inputs,
               out: Path, summary: dict) -> tuple[dict, str]:
        """Write the trained weights for PyTorch and check them there: (entries for the run's
        result, the words for the summary line). Runs in process 0 only."""
        raise NotImplementedError


def sum_totals(totals: Any, batch_sums: Any) -> Any:
    """Add one evaluation batch's sums (device arrays, already global) to the running totals,
    in float64 (int64 for integer sums) on the host; `totals` None starts them."""
    host = jax.tree.map(lambda x: np.asarray(x, np.int64 if np.issubdtype(x.dtype, np.integer) else np.float64),
                        jax.device_get(batch_sums))
    return host if totals is None else jax.tree.map(np.add, totals, host)


def task_for(cfg: "TrainConfig") -> Task:
    """The task that trains `cfg.model`, holding the run's recipe."""
    import importlib

    from train.config import TASKS, task_name

    module, _, cls = TASKS[task_name(cfg.model)][0].partition(":")
    return getattr(importlib.import_module(module), cls)(cfg.recipe)
