"""How a multi-host PPO run splits its work: each host samples and scores its own rows.

The policy trains on the global mesh (FSDP across every host). Rollouts do not: every host
keeps a replica of the policy on its local devices (`LocalReplica`), samples the rows of the
global batch its devices hold in training (`train_state.process_rows`), and scores them in its
own execution pool. Only token arrays and per-row rewards cross hosts, as global arrays built
from each host's rows (`to_global`); the row statistics the metrics need are gathered
(`gather_rows`). On one host every function here is the identity (or a plain `device_put`).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ledex_jax.sharding import make_mesh, param_shardings, use_mesh


def multihost() -> bool:
    return jax.process_count() > 1


def to_global(local: np.ndarray, sharding: NamedSharding, global_rows: int) -> jax.Array:
    """A [global_rows, ...] array from this host's rows (in `process_rows` order); `sharding`
    is the batch sharding, cut to the array's rank."""
    local = np.asarray(local)
    sharding = NamedSharding(sharding.mesh, PartitionSpec(*tuple(sharding.spec)[:local.ndim]))
    if not multihost():
        return jax.device_put(local, sharding)
    return jax.make_array_from_process_local_data(sharding, local, (global_rows, *local.shape[1:]))


def to_local(x: jax.Array) -> np.ndarray:
    """This host's rows of a batch-sharded global array, in global order (NumPy)."""
    if x.is_fully_addressable:
        return np.asarray(x)
    shards = {}
    for shard in x.addressable_shards:  # replicas along other axes hold the same rows: keep one
        shards.setdefault(shard.index[0].start or 0, shard)
    return np.concatenate([np.asarray(shards[k].data) for k in sorted(shards)], axis=0)


def gather_rows(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-row host arrays -> the same arrays over every host's rows (host order)."""
    if not multihost():
        return rows
    return {k: np.asarray(multihost_utils.process_allgather(np.asarray(v), tiled=True)) for k, v in rows.items()}


def global_max(value: int) -> int:
    """The largest `value` any host has (e.g. the prompt width all hosts must pad to)."""
    if not multihost():
        return int(value)
    return int(np.max(multihost_utils.process_allgather(np.asarray(value, np.int64))))


class LocalReplica:
    """The policy's weights on this host's devices, refreshed from the global train state.

    A 'hybrid' mesh of shape (hosts, *local mesh) holds every host's local mesh as one slice. One
    jitted identity reshards the global parameters onto it replicated across hosts (an
    all-gather over the host axis, sharded as the local mesh shards them within a host); this
    host's shards of the result are then exactly a local-mesh array, assembled without a copy.
    """

    def __init__(self, mesh_shape, rules):
        self.rules = tuple(rules)
        by_host: dict[int, list] = {}
        for device in jax.devices():
            by_host.setdefault(device.process_index, []).append(device)
        meshes = [make_mesh(mesh_shape, devices=sorted(by_host[p], key=lambda d: d.id)) for p in sorted(by_host)]
        sizes = {m.devices.shape for m in meshes}
        if len(sizes) != 1:
            raise ValueError(f"hosts have different local meshes {sorted(sizes)}; every host needs the same "
                             "number of devices for per-host rollouts")
        self.mesh: Mesh = meshes[jax.process_index()]
        self.hybrid = Mesh(np.stack([m.devices for m in meshes]), ("hosts", *self.mesh.axis_names),
                           axis_types=(jax.sharding.AxisType.Auto,) * (1 + len(self.mesh.axis_names)))
        self._gather = None

    def __call__(self, params):
        """Global parameters (any sharding on the global mesh) -> the same on the local mesh."""
        local = param_shardings(params, self.mesh, self.rules)
        if self._gather is None:
            hybrid = jax.tree.map(lambda s: NamedSharding(self.hybrid, s.spec), local)
            self._gather = jax.jit(lambda p: p, out_shardings=hybrid)
        with use_mesh(self.hybrid, self.rules):  # whatever mesh the caller is under
            gathered = self._gather(params)
        return jax.tree.map(
            lambda x, s: jax.make_array_from_single_device_arrays(
                x.shape, s, [shard.data for shard in x.addressable_shards]), gathered, local)
