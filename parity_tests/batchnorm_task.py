"""A test task for the trainer's seam: what segmentation will need, on the digits.

A small CNN with BatchNorm (non-parameter state in `batch_stats`, where the classifiers have
none), an evaluation that sums a confusion matrix (an array, not a number), and its own export:
the variables as an .npz, checked by running them in an equivalent PyTorch network in eval mode
(running statistics). Everything else is the classification task's.

Run as a script (`python parity_tests/batchnorm_task.py FLAGS`) it trains with the trainer's
flags and prints the run's result as JSON on its last line (process 0).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from swin_jax.checkpoint_io import write_atomic
from train.classification import ClassificationTask
from train.config import TrainConfig
from train.data import Dataset
from train.task import apply_model

CLASSES = 10


@dataclass(frozen=True)
class TinyConfig:
    num_classes: int = CLASSES
    img_size: tuple[int, int] = (32, 32)
    in_chans: int = 1
    width: int = 8
    family: str = "tiny_cnn"
    remat: str = "none"


class TinyBatchNormNet(nn.Module):
    """conv 3x3 -> BatchNorm -> ReLU -> global mean -> dense. The conv has no bias, as before any
    BatchNorm (mmseg's ConvModule): BatchNorm cancels it, so its gradient is exactly zero and
    Adam would turn the rounding noise there into updates that differ between device counts."""

    config: TinyConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Conv(self.config.width, (3, 3), padding="SAME", use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn")(x)
        x = nn.relu(x).mean(axis=(1, 2))
        return nn.Dense(self.config.num_classes, name="head")(x)


def flat_variables(variables: dict) -> dict[str, np.ndarray]:
    """{"params/conv/kernel": ..., "batch_stats/bn/mean": ...}"""
    return {name: np.asarray(leaf) for name, leaf in flat_arrays(variables).items()}


def torch_correct(variables: dict[str, np.ndarray], data: Dataset) -> int:
    """Correct test digits of the same network in PyTorch, eval mode, from the exported arrays."""
    import torch

    v = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in variables.items()}
    conv = torch.nn.Conv2d(1, v["params/conv/kernel"].shape[-1], 3, padding=1, bias=False)
    bn = torch.nn.BatchNorm2d(conv.out_channels, eps=1e-5)
    head = torch.nn.Linear(conv.out_channels, CLASSES)
    with torch.no_grad():
        conv.weight.copy_(v["params/conv/kernel"].permute(3, 2, 0, 1))
        bn.weight.copy_(v["params/bn/scale"])
        bn.bias.copy_(v["params/bn/bias"])
        bn.running_mean.copy_(v["batch_stats/bn/mean"])
        bn.running_var.copy_(v["batch_stats/bn/var"])
        head.weight.copy_(v["params/head/kernel"].T)
        head.bias.copy_(v["params/head/bias"])
        bn.eval()
        x = torch.from_numpy(np.ascontiguousarray(data.test.images.transpose(0, 3, 1, 2)))
        logits = head(torch.relu(bn(conv(x))).mean(dim=(2, 3)))
    return int((logits.argmax(-1).numpy() == data.test.labels).sum())


class BatchNormTask(ClassificationTask):
    """Classification of the digits by `TinyBatchNormNet`, evaluated with a confusion matrix."""

    name = "batchnorm-test"
    export_files = ("variables.npz",)

    def input_size(self, cfg: TrainConfig) -> tuple[int, int]:
        return tuple(cfg.img_size or (32, 32))

    def build_model(self, cfg: TrainConfig, data: Dataset) -> Any:
        return TinyBatchNormNet(TinyConfig(num_classes=data.num_classes, img_size=data.img_size,
                                           in_chans=data.in_chans))

    def variable_shapes(self, model: Any) -> dict:
        x = jax.ShapeDtypeStruct((1, *model.config.img_size, model.config.in_chans), jnp.float32)
        return dict(jax.eval_shape(model.init, jax.random.PRNGKey(0), x))

    def initial_variables(self, cfg: TrainConfig, model: Any, log: Callable[[str], None]) -> dict:
        x = jnp.zeros((1, *model.config.img_size, model.config.in_chans), jnp.float32)
        return dict(jax.jit(model.init)(jax.random.PRNGKey(cfg.seed), x))

    def compiler_options(self, model: Any) -> dict:
        return {}

    def eval_sums(self, model: Any, variables: dict, batch: dict) -> dict:
        """Classification's sums and the confusion matrix [true class, predicted class]."""
        logits, _ = apply_model(model, variables, batch["images"], train=False)
        w, k = batch["weights"], model.config.num_classes
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        guess = jnp.argmax(logits, -1)
        confusion = (jax.nn.one_hot(batch["labels"], k) * w[:, None]).T @ jax.nn.one_hot(guess, k)
        return {"loss_sum": jnp.sum(loss * w), "correct": jnp.sum((guess == batch["labels"]) * w),
                "count": jnp.sum(w), "confusion": confusion}

    def summarize(self, totals: dict) -> dict:
        return {**super().summarize(totals), "confusion": np.asarray(totals["confusion"]).astype(int).tolist()}

    def export(self, cfg: TrainConfig, model: Any, variables: dict, data: Dataset, inputs: Any, out: Path,
               summary: dict) -> tuple[dict, str]:
        arrays = flat_variables(variables)
        path = out / self.export_files[0]
        write_atomic(path, lambda f: np.savez(f, **arrays))
        correct = torch_correct(arrays, data)
        return (dict(weights=str(path), torch_correct=correct),
                f"exported {path} ({len(arrays)} arrays); PyTorch accuracy {correct}/{summary['total']}")


def main(argv: list[str]) -> int:
    from train import sharding
    from train.config import parse_config
    from train.loop import TrainingRun, train

    # FSDP splits arrays of this many elements and up: the tests lower it so that the tiny
    # network's kernels, BatchNorm params and running statistics are sharded too
    sharding.FSDP_MIN_ELEMENTS = int(os.environ.get("BATCHNORM_TASK_FSDP_MIN_ELEMENTS", sharding.FSDP_MIN_ELEMENTS))
    placement: dict[str, list] = {}  # how the set-up placed each array of the model state
    set_up = TrainingRun.set_up

    def set_up_and_record(run: TrainingRun) -> None:
        set_up(run)
        placement.update({name: list(x.sharding.spec) for name, x in flat_arrays(run.state.model_state).items()})

    TrainingRun.set_up = set_up_and_record
    cfg = parse_config(argv)
    result = train(cfg, task=BatchNormTask(cfg.recipe))
    if jax.process_index() == 0:
        print(json.dumps({**result, "model_state_placement": placement}, default=str))
    return 0


def flat_arrays(tree: Any) -> dict[str, Any]:
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
