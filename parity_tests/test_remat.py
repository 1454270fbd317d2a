"""Activation rematerialisation (`remat` in the model configs, `--remat` in the trainer): the
same loss and gradients as keeping every activation, and less memory."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import randomize_jax_params, rel_diff

import swin_jax

REMAT_TOL = 1e-6  # loss and every gradient, relative to the no-remat step (issue 17)

CASES = {
    "swin": ("swin_tiny_patch4_window7_224",
             dict(img_size=(64, 96), embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4)),
    "swinv2": ("swinv2_tiny_window8_256",
               dict(img_size=(64, 64), embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4)),
    "vit": ("vit_small_patch16_224", dict(img_size=(64, 48), depth=3, embed_dim=96, num_heads=3)),
}


@functools.lru_cache(maxsize=None)
def loss_and_grads(family: str, remat: str) -> tuple[float, dict, int]:
    """One training-mode step (dropout and drop path on, the same keys) with O(1) params."""
    name, overrides = CASES[family]
    model = swin_jax.create_model(name, remat=remat, drop_rate=0.1, drop_path_rate=0.3, num_classes=10, **overrides)
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), swin_jax.param_shapes(model))
    params = randomize_jax_params(zeros, seed=3)
    images = jax.random.normal(jax.random.PRNGKey(1), (4, *model.config.img_size, 3))
    labels = jnp.arange(4) % 10

    def loss_fn(p):
        logits = model.apply({"params": p}, images, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    step = jax.value_and_grad(loss_fn)
    rematted = str(jax.make_jaxpr(step)(params)).count(" remat")  # the recomputed pieces of the program
    loss, grads = jax.jit(step)(params)
    return float(loss), jax.tree.map(np.asarray, grads), rematted


@pytest.mark.parametrize("remat", ["block", "attention"])
@pytest.mark.parametrize("family", list(CASES))
def test_remat_step_equals_the_plain_step(family, remat, record):
    plain_loss, plain, none_rematted = loss_and_grads(family, "none")
    loss, grads, rematted = loss_and_grads(family, remat)
    assert none_rematted == 0 and rematted > 0  # remat is in the program, and only when asked for
    assert jax.tree.structure(grads) == jax.tree.structure(plain)  # same parameters, same names
    worst = max(rel_diff(p, g, floor=0.0) for p, g in zip(jax.tree.leaves(plain), jax.tree.leaves(grads), strict=True))
    record(f"remat {remat} {family}: gradients", worst)
    assert abs(loss - plain_loss) <= REMAT_TOL * abs(plain_loss)
    assert worst <= REMAT_TOL


def test_remat_choice_is_checked():
    with pytest.raises(ValueError, match="remat must be one of"):
        swin_jax.create_model("vit_tiny_patch16_224", remat="everything")


@pytest.mark.slow
def test_block_remat_halves_swin_b_step_temporaries(record):
    """The compiled Swin-B train step (batch 8, 224): temporaries fall by at least half with
    block remat (`swin-jax bench --memory-table`'s measurement, on one device)."""
    from train.bench import memory_markdown, memory_table

    rows = memory_table(["swin_base_patch4_window7_224"], 8, ("none", "block"), log=print, time_steps=0)
    plain, block = [r for r in rows if r["devices"] == 1]  # (more rows where several devices are visible)
    record("Swin-B step temporaries, remat none (MiB)", plain["temp_mib"])
    record("Swin-B step temporaries, remat block (MiB)", block["temp_mib"])
    assert (plain["remat"], block["remat"]) == ("none", "block") and plain["devices"] == block["devices"] == 1
    assert block["argument_mib"] == plain["argument_mib"]  # the same state and batch
    assert block["temp_mib"] <= 0.5 * plain["temp_mib"]
    assert "| swin_base_patch4_window7_224 | block | 1 | replicated |" in memory_markdown([plain, block])
