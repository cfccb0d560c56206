"""Values that cross the sandbox boundary: a closed set of builtin types in tagged JSON.

The child never pickles. It converts whatever the program returned into exact builtins
(None, bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset, nested) without
calling the program's own methods, and the judge rebuilds exact builtins from JSON. So every
comparison the judge makes on such data runs on values whose `__eq__` nobody could have tampered
with. Anything else (an instance of the program's classes, a function, an iterator) crosses as a
handle, {"h": ...}: the child keeps the object and the judge gets a remote proxy
(`executors.remote`) that forwards what test code does with it.

Stdlib only: this module is imported inside the sandbox.
"""
import base64
import itertools
import json

CONTAINERS = (list, tuple, dict, set, frozenset)
SCALARS = (type(None), bool, int, float, complex, str, bytes)
CLOSED = SCALARS + CONTAINERS
# Items that cross as themselves (no tag): lists of these take the fast paths below.
_UNTAGGED = frozenset({type(None), bool, int, float, str})
_LIST = frozenset({list})

MAX_DEPTH = 100
MAX_NODES = 1_000_000
MAX_CHARS = 32 * 1024 * 1024
# Ints cross the boundary, and the judge computes with them, up to 65,536 bits (19,728 decimal
# digits): four times what str() of an int may show by default (4,300 digits), far above any
# HumanEval/MBPP answer, and small enough that every arithmetic step the judge takes on such
# ints is a matter of microseconds to milliseconds.
MAX_INT_BITS = 1 << 16
_BIG_INT = 1 << 62


class UnsupportedValue(TypeError):
    """The program produced something outside the closed set of types, or too large a value."""


class TooLarge(OverflowError, ValueError):
    """A value (or a result the judge would compute from one) exceeds the caps above: an
    overflow of the judge's arithmetic, and a value the decoder refuses."""


def int_too_large(bits, cap=MAX_INT_BITS):
    return f"value too large: int of {bits:,} bits (cap {cap:,})"


class _Budget:
    """What is left of the caps while one value is encoded or decoded; `error` is what running
    out raises (UnsupportedValue when encoding, TooLarge when decoding)."""
    __slots__ = ("nodes", "chars", "int_bits", "error", "handles")

    def __init__(self, nodes, chars, int_bits=MAX_INT_BITS, error=None):
        self.nodes = nodes
        self.chars = chars
        self.int_bits = int_bits
        self.error = error or UnsupportedValue
        self.handles = None  # encode: obj -> handle payload; decode: payload -> obj

    def take(self, chars=0, nodes=1):
        self.nodes -= nodes
        self.chars -= chars
        if self.nodes < 0:
            raise self.error("value too large: more than the cap on items")
        if self.chars < 0:
            raise self.error("value too large: more than the cap on characters")

    def int_fits(self, magnitude):
        """Whether an int of this magnitude is within the cap (raises `error` if not)."""
        self.check_int_bits(magnitude.bit_length())
        return True

    def check_int_bits(self, bits):
        if self.int_bits is not None and bits > self.int_bits:
            raise self.error(int_too_large(bits, self.int_bits))


def _base_scalar(v, t):
    """Exact-type copy of a subclass instance, read through the base type's own slots."""
    if issubclass(t, bool):  # bool cannot be subclassed; kept for completeness
        return bool(int.__int__(v))
    if issubclass(t, int):
        return int.__int__(v)
    if issubclass(t, float):
        return float.__float__(v)
    if issubclass(t, complex):
        return complex(float.__float__(complex.real.__get__(v)), float.__float__(complex.imag.__get__(v)))
    if issubclass(t, str):
        return str.__str__(v)
    if issubclass(t, bytes):
        return bytes.__bytes__(v)
    raise UnsupportedValue(f"unsupported type {t.__qualname__}")


_WHOLE_LIST_MIN = 8  # shorter lists: the item-by-item path is as fast


def _untagged_items(items, depth, budget, int_ok):
    """A copy of the list `items` (of _WHOLE_LIST_MIN or more) when each one is None, a bool,
    a float, a str or an int for which `int_ok(largest magnitude)` holds, or when each one is
    a list of those (rows: coordinates, matrices), taken from `budget` as one node each; None
    when the item-by-item path must look at them. Built-in calls over the whole list: most
    values that cross (MBPP+ arguments, answers) are such lists, and a Python step per item
    costs more than the program's own work."""
    if len(items) < _WHOLE_LIST_MIN or depth < 1:
        return None
    kinds = set(map(type, items))
    if kinds <= _UNTAGGED:
        chars = _scalar_chars(items, kinds, int_ok)
        if chars is None:
            return None
        budget.take(chars, nodes=len(items))
        return list(items)
    if kinds != _LIST or depth < 2:
        return None
    cells = list(itertools.chain.from_iterable(items))
    kinds = set(map(type, cells))
    chars = _scalar_chars(cells, kinds, int_ok) if kinds <= _UNTAGGED else None
    if chars is None:
        return None
    budget.take(chars, nodes=len(items) + len(cells))
    return [list(row) for row in items]


def _scalar_chars(items, kinds, int_ok):
    """The characters the strs among `items` (untagged scalars of `kinds`) hold; None if an
    int among them fails `int_ok`."""
    if int in kinds:
        ints = items if len(kinds) == 1 else [x for x in items if type(x) is int]
        if not int_ok(max(max(ints), -min(ints))):
            return None
    if str not in kinds:
        return 0
    if len(kinds) == 1:
        return sum(map(len, items))
    return sum([len(x) for x in items if type(x) is str])


def _small(magnitude):
    return magnitude < _BIG_INT


def _items(v, t):
    """Items of a container read through the base type, so overridden __iter__ is not consulted."""
    if issubclass(t, dict):
        return list(dict.items(v))
    if issubclass(t, (set, frozenset)):
        return list(set.__iter__(v)) if issubclass(t, set) else list(frozenset.__iter__(v))
    if issubclass(t, list):
        return list(list.__iter__(v))
    return list(tuple.__iter__(v))


def encode(v, max_depth=MAX_DEPTH, max_nodes=MAX_NODES, max_chars=MAX_CHARS,
           max_int_bits=MAX_INT_BITS, handles=None):
    """`v` as a JSON-able tagged structure. Outside the closed set: `handles(obj)` gives the
    payload of an {"h": payload} tag, or (no `handles`) UnsupportedValue is raised."""
    budget = _Budget(max_nodes, max_chars, max_int_bits)
    budget.handles = handles
    return _enc(v, max_depth, budget)


def _enc(v, depth, budget):
    if depth < 0:
        raise UnsupportedValue(f"value nested too deeply (cap {MAX_DEPTH} levels)")
    t = type(v)
    if t is bool or v is None:
        budget.take()
        return v
    if t is int:
        budget.take()
        if -_BIG_INT < v < _BIG_INT:
            return v
        budget.check_int_bits(v.bit_length())
        h = hex(v)
        budget.take(len(h))
        return {"i": h}
    if t is float:
        budget.take()
        return v
    if t is str:
        budget.take(len(v))
        return v
    if t is bytes:
        budget.take(len(v))
        return {"b": base64.b64encode(v).decode("ascii")}
    if t is complex:
        budget.take()
        return {"c": [v.real, v.imag]}
    if t is list or t is tuple:
        flat = _untagged_items(v, depth, budget, _small)
        if flat is not None:
            budget.take()
            return flat if t is list else {"t": flat}
    if t in CONTAINERS or (isinstance(v, CONTAINERS) and not _numpy(t)):
        budget.take()
        items = _items(v, t)
        if issubclass(t, dict):
            return {"d": [[_enc(k, depth - 1, budget), _enc(x, depth - 1, budget)] for k, x in items]}
        enc = [_enc(x, depth - 1, budget) for x in items]
        if issubclass(t, list):
            return enc
        if issubclass(t, tuple):
            return {"t": enc}
        return {"s": enc} if issubclass(t, set) else {"f": enc}
    if isinstance(v, SCALARS):
        return _enc(_base_scalar(v, t), depth, budget)
    if _numpy(t):
        # numpy scalars and arrays: tolist() gives builtins (whatever it returns is re-checked)
        budget.take()
        return _enc(v.tolist(), depth - 1, budget)
    if budget.handles is not None:
        budget.take()
        return {"h": budget.handles(v)}
    raise UnsupportedValue(f"unsupported type {t.__module__}.{t.__qualname__}")


def _numpy(t):
    return getattr(t, "__module__", "") == "numpy" and hasattr(t, "tolist")


def dumps(v, **caps):
    """Encode and serialise to compact JSON text."""
    return json.dumps(encode(v, **caps), separators=(",", ":"))


def decode(obj, max_depth=MAX_DEPTH, max_nodes=MAX_NODES, max_chars=MAX_CHARS,
           max_int_bits=MAX_INT_BITS, handles=None):
    """Rebuild exact builtins from `encode`'s output; raises ValueError on anything malformed,
    TooLarge (a ValueError) on a value over the caps (depth, nodes, characters, int bits).
    {"h": payload} tags become `handles(payload)` (without `handles`, they are malformed)."""
    budget = _Budget(max_nodes, max_chars, max_int_bits, TooLarge)
    budget.handles = handles
    try:
        return _dec(obj, max_depth, budget)
    except TooLarge:
        raise
    except (TypeError, RecursionError, ValueError, KeyError, IndexError) as e:
        raise ValueError(f"malformed value: {type(e).__name__}: {e}") from None


def _dec(o, depth, budget):
    if depth < 0:
        raise TooLarge(f"value nested too deeply (cap {MAX_DEPTH} levels)")
    t = type(o)
    budget.take(len(o) if t is str else 0)
    if t is int:
        budget.check_int_bits(o.bit_length())
        return o
    if t is str:
        return o
    if o is None or t in (bool, float):
        return o
    if t is list:
        flat = _untagged_items(o, depth, budget, budget.int_fits)
        return flat if flat is not None else [_dec(x, depth - 1, budget) for x in o]
    if t is dict and len(o) == 1:
        (tag, x), = o.items()
        if tag in _SEQUENCE_TAGS:
            flat = _untagged_items(_list(x), depth, budget, budget.int_fits)
            if flat is not None:
                return _SEQUENCE_TAGS[tag](flat)
        if tag == "t":
            return tuple(_dec(e, depth - 1, budget) for e in _list(x))
        if tag == "d":
            return {_dec(k, depth - 1, budget): _dec(e, depth - 1, budget) for k, e in (_pair(p) for p in _list(x))}
        if tag == "s":
            return {_dec(e, depth - 1, budget) for e in _list(x)}
        if tag == "f":
            return frozenset(_dec(e, depth - 1, budget) for e in _list(x))
        if tag == "b" and type(x) is str:
            budget.take(len(x) * 3 // 4, nodes=0)  # the tag's dict took the node
            return base64.b64decode(x.encode("ascii"), validate=True)
        if tag == "c" and type(x) is list and len(x) == 2 and all(type(p) in (int, float) for p in x):
            return complex(x[0], x[1])
        if tag == "i" and type(x) is str:
            cap = budget.int_bits
            if cap is not None and len(x) > cap // 4 + 3:  # "-0x" and 4 bits a digit: no int() of a huge one
                budget.check_int_bits(4 * len(x.lstrip("-")[2:]))
            v = int(x, 16)
            budget.check_int_bits(v.bit_length())
            return v
        if tag == "h" and budget.handles is not None:
            return budget.handles(x)
    raise ValueError(f"unexpected {t.__name__}")


_SEQUENCE_TAGS = {"t": tuple, "s": set, "f": frozenset}


def _list(x):
    if type(x) is not list:
        raise ValueError("expected a list")
    return x


def _pair(p):
    if type(p) is not list or len(p) != 2:
        raise ValueError("expected a [key, value] pair")
    return p


def loads(text, max_depth=MAX_DEPTH, **caps):
    """Parse JSON text produced by `dumps`."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"malformed value: {e}") from None
    return decode(obj, max_depth, **caps)
