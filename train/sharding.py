"""How the training state lies on the devices of the mesh's `data` axis.

Data parallel (the default): every device holds the whole state (params, optimizer state, EMA)
and the batch is split. With FSDP (`--fsdp`, ZeRO-3 style) each large array of the state is
split too, along its largest axis that the device count divides, so each device holds 1/n of
it; small arrays, and those with no such axis, stay replicated. Nothing else changes: the step
is the same jitted function, and XLA's SPMD partitioner gathers a layer's weights where the
step needs them and reduce-scatters their gradients (big_vision's and MaxText's approach).
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
FSDP_MIN_ELEMENTS = 2**12  # smaller arrays stay replicated: gathering them costs more than they weigh


def fsdp_spec(shape: tuple[int, ...], devices: int) -> P:
    """The partition of one array of `shape` over `devices`: along its largest axis that
    `devices` divides (the first of equal ones), or replicated when the array is small or no
    axis divides."""
    if devices <= 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_ELEMENTS:
        return P()
    divisible = [(size, -axis) for axis, size in enumerate(shape) if size % devices == 0]
    if not divisible:
        return P()
    axis = -max(divisible)[1]
    return P(*[DATA_AXIS if a == axis else None for a in range(len(shape))])


def state_shardings(state: Any, mesh: Mesh, fsdp: bool) -> Any:
    """A pytree shaped like `state` (arrays or `jax.ShapeDtypeStruct`s) of `NamedSharding`s:
    all replicated, or with `fsdp` each array split as `fsdp_spec` says."""
    devices = mesh.shape[DATA_AXIS]
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), devices) if fsdp else P()), state)


def put_state(state: Any, shardings: Any) -> Any:
    """Place a host pytree (the same values in every process) on the devices as `shardings`
    say; each process fills only its own devices' pieces, so this works across hosts."""

    def put(x: Any, sharding: NamedSharding) -> jax.Array:
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, state, shardings)


def bytes_per_device(tree: Any) -> dict[Any, int]:
    """Bytes of `tree`'s arrays held by each of this process's devices."""
    held: dict[Any, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
    return held


def gather_to_host(tree: Any) -> Any:
    """The whole values of a (possibly sharded, possibly multi-host) pytree as numpy arrays, in
    every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
