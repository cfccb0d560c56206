"""Mesh construction and the logical-axis rules table.

Every parameter and large activation names its dimensions with logical axes (`embed`, `mlp`,
`heads`, ...). One rules table maps logical names to mesh axes (`data`, `fsdp`, `tensor`), so
switching FSDP <-> tensor parallelism is a config edit, never a code edit.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Iterable, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# (logical name, mesh axis or tuple of mesh axes or None). Parameter names first, then the
# activation names (prefixed `act_`) which usually stay unsharded along features.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("positions", None),
    ("value_embed", "fsdp"),  # the PPO value head's input dimension (ledex_jax/ppo/policy.py)
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_length", None),
)

_ACTIVE: contextvars.ContextVar[tuple[Mesh, tuple] | None] = contextvars.ContextVar("ledex_mesh", default=None)


def make_mesh(shape: Sequence[int] = (1, -1, 1), axis_names: Sequence[str] = MESH_AXES,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a (data, fsdp, tensor) mesh; one -1 entry takes the remaining devices.

    Axes are `Auto` (GSPMD propagation with explicit constraints), chosen deliberately: the
    model annotates shardings itself and jax 0.10 would otherwise default to explicit axes.
    """
    devices = list(devices if devices is not None else jax.devices())
    shape = list(shape)
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one -1 entry")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if len(devices) % known:
            raise ValueError(f"mesh shape {shape} does not divide {len(devices)} devices")
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) != len(devices):
        raise ValueError(
            f"mesh shape {tuple(shape)} needs {math.prod(shape)} devices but {len(devices)} are available; "
            "fix config.mesh_shape (use -1 for one axis to take the rest)")
    return jax.make_mesh(tuple(shape), tuple(axis_names), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,) * len(shape))


def local_mesh(shape: Sequence[int] = (1, -1, 1)) -> Mesh | None:
    """A mesh over this host's devices only (hosts that do not talk: sampling for data
    collection and evaluation); None on a single device."""
    mesh = make_mesh(tuple(shape), devices=jax.local_devices())
    return mesh if mesh.size > 1 else None


def rules_dict(rules: Iterable[tuple[str, object]]) -> dict[str, object]:
    out = {}
    for name, target in rules:
        out.setdefault(name, target)  # first match wins, as in flax/MaxText tables
    return out


def logical_to_spec(axes: Sequence[str | None], rules, mesh: Mesh | None = None,
                    shape: Sequence[int] | None = None, what: str = "array") -> PartitionSpec:
    """Resolves logical axis names to a PartitionSpec.

    With a shape and mesh, checks divisibility: a size-1 dim is replicated (MQA's single KV head),
    any other indivisible dim is an error naming the array, the axis and the fix.
    """
    table = rules_dict(rules)
    used: set[str] = set()
    spec = []
    for i, name in enumerate(axes):
        target = table.get(name) if name is not None else None
        if name is not None and name not in table:
            raise KeyError(f"{what}: logical axis {name!r} has no entry in the sharding rules table")
        targets = (target,) if isinstance(target, str) else tuple(target or ())
        targets = tuple(t for t in targets if t not in used)  # a mesh axis may shard one dim only
        if mesh is not None:
            targets = tuple(t for t in targets if mesh.shape.get(t, 1) > 1)
        if targets and mesh is not None and shape is not None:
            size = math.prod(mesh.shape[t] for t in targets)
            if shape[i] % size:
                if shape[i] == 1:
                    targets = ()
                else:
                    raise ValueError(
                        f"{what}: dimension {i} ({name}, size {shape[i]}) is not divisible by mesh axes "
                        f"{targets} of total size {size}; change the mesh shape or the rule for {name!r}")
        used.update(targets)
        spec.append(targets[0] if len(targets) == 1 else (targets or None))
    return PartitionSpec(*spec)


def spec_devices(mesh: Mesh, entry) -> int:
    """How many devices one PartitionSpec entry (a mesh axis name, a tuple of them, or None)
    splits its array axis over."""
    axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
    return math.prod(mesh.shape[a] for a in axes)


def named_sharding(mesh: Mesh, axes: Sequence[str | None], rules, shape=None, what="array") -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, rules, mesh, shape, what))


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules=DEFAULT_RULES):
    """Activates `mesh` + `rules` for activation constraints inside model code (and jax's own mesh)."""
    token = _ACTIVE.set((mesh, tuple(rules)))
    try:
        with jax.set_mesh(mesh):
            yield mesh
    finally:
        _ACTIVE.reset(token)


def active_mesh() -> tuple[Mesh, tuple] | None:
    return _ACTIVE.get()


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Sharding constraint on an activation by logical names; a no-op without an active mesh."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    return jax.lax.with_sharding_constraint(x, named_sharding(mesh, axes, rules, x.shape, "activation"))


def param_shardings(state, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedSharding for every Variable in an nnx.State (or abstract state), from its `axes` metadata."""
    from flax import nnx  # local: keep this module importable by code that never builds a model

    def one(path, v):
        what = "param " + "/".join(str(getattr(k, "key", k)) for k in path)
        axes = v.get_metadata().get("axes")
        if axes is None:
            raise ValueError(f"{what} has no logical `axes` metadata")
        return v.replace(named_sharding(mesh, axes, rules, v.get_value().shape, what))

    return jax.tree_util.tree_map_with_path(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
