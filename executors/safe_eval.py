"""Split a test expression into the parts the child must compute and the part the parent judges.

`split(expr)` turns `assert math.isclose(area(2), 12.56, rel_tol=1e-3)` into holes that only the
program can compute (`area(2)`) and a template (`math.isclose(__hole0__, 12.56, rel_tol=1e-3)`)
that the trusted parent evaluates on the returned plain values with a small interpreter:
literals, arithmetic, comparisons, a fixed set of pure builtins and `math`, and non-underscore
methods of builtin values. Expected values live only in the template, so the child never sees
them, and the verdict never depends on an object the program made.
"""
import ast
import builtins
import re
import math
import operator

from executors.values import CLOSED, MAX_CHARS, MAX_INT_BITS, MAX_NODES, TooLarge, int_too_large

HOLE_PREFIX = "__hole"
_SAFE_NAMES = (
    "abs", "all", "any", "ascii", "bin", "bool", "bytes", "chr", "complex", "dict", "divmod",
    "enumerate", "filter", "float", "format", "frozenset", "hex", "int", "isinstance", "len",
    "list", "map", "max", "min", "oct", "ord", "pow", "range", "repr", "reversed", "round", "set",
    "slice", "sorted", "str", "sum", "tuple", "type", "zip",
)
SAFE_FUNCS = {name: getattr(builtins, name) for name in _SAFE_NAMES}
SAFE_MODULES = {"math": math}
# builtins that take callables: with a program function among the arguments the whole call runs
# in the child (its arguments are inputs, not expected values)
_TAKES_CALLABLE = {"map", "filter", "sorted", "min", "max"}
# conversions that, applied to program results only, are computed in the child (so a generator
# or a custom iterable can still be consumed)
_CONSUMERS = {"list", "tuple", "set", "frozenset", "sorted", "len", "sum", "min", "max", "any",
              "all", "dict", "str", "repr", "bool", "reversed", "enumerate", "zip"}
_PLAIN_TYPES = CLOSED + (range, map, filter, zip, enumerate, reversed, slice)
_MAX_SEQ = 10 ** 8

_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow, ast.LShift: operator.lshift, ast.RShift: operator.rshift,
    ast.BitOr: operator.or_, ast.BitXor: operator.xor, ast.BitAnd: operator.and_,
    ast.MatMult: operator.matmul,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_,
          ast.Invert: operator.invert}
_CMPOPS = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_SINGLETONS = (None, True, False, Ellipsis)


class NotLowerable(Exception):
    """The expression uses something the parent-side interpreter does not evaluate."""


class HoleError(Exception):
    """A hole the judgement needs raised in the child (or was never computed)."""

    def __init__(self, index, info):
        super().__init__(index)
        self.index = index
        self.info = info


class Split:
    """Result of `split`: the parent template and the hole expressions for the child."""

    def __init__(self, template, holes, main_hole):
        self.template = template   # ast.Expression with __holeK__ names
        self.holes = holes         # list of source strings, in evaluation order
        self.main_hole = main_hole  # index of the hole shown as "actual output", or None


def split(expr, rename=None, shadowed=(), hole_transform=None, source=None):
    """Split an expression AST (not mutated).

    `rename` maps names inside holes (candidate -> the entry point); `shadowed` are names the
    program defines itself, which therefore never mean the builtin of the same name;
    `hole_transform` rewrites each hole's (copied) AST before it becomes source, where the hole
    calls something inside it. With the `source` (a SourceText of what the AST was parsed
    from), a hole that needs no rewriting is cut from it verbatim (cheaper than unparsing).
    """
    holes = []
    splitter = _Splitter(holes, rename or {}, frozenset(shadowed), hole_transform, source)
    node = splitter.visit_top(expr)
    main = None
    if isinstance(node, ast.Compare):
        for operand in [node.left, *node.comparators]:
            if isinstance(operand, ast.Name) and operand.id.startswith(HOLE_PREFIX):
                main = int(operand.id[len(HOLE_PREFIX):-2])
                break
    if main is None and holes:
        main = 0
    template = ast.fix_missing_locations(ast.Expression(body=node))
    return Split(template, holes, main)


class _Splitter:
    def __init__(self, holes, rename, shadowed, hole_transform, source):
        self.holes = holes
        self.rename = rename
        self.shadowed = shadowed
        self.hole_transform = hole_transform
        self.source = source

    def safe_name(self, name):
        return (name in SAFE_FUNCS or name in SAFE_MODULES) and name not in self.shadowed \
            and name not in self.rename

    def is_hole(self, node):
        """Whether `node` as a whole must be computed by the program (no side effects)."""
        if isinstance(node, ast.Name):
            if node.id.startswith(HOLE_PREFIX):
                raise NotLowerable("reserved name")
            return not self.safe_name(node.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            return self.is_hole(node.value)  # a program object's attribute
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, (ast.Name, ast.Attribute)) and self.is_hole(func):
                return True  # a program function or a method of a program object
            if not isinstance(func, (ast.Name, ast.Attribute)) and any(
                    isinstance(n, ast.Name) and not self.safe_name(n.id) for n in ast.walk(func)):
                return True  # calling something the program computed: f(1)(2), handlers[0](x)
            if isinstance(func, ast.Name):
                args = [a.value if isinstance(a, ast.Starred) else a for a in node.args]
                args += [k.value for k in node.keywords]
                holes = [self.is_hole(a) for a in args]
                if func.id in _TAKES_CALLABLE and any(
                        h and isinstance(a, ast.Name) for a, h in zip(args, holes)):
                    return True  # e.g. map(f, xs): the call needs the program's function
                if func.id in _CONSUMERS and holes and all(holes):
                    return True  # e.g. list(gen(x)): consume the program's iterable there
        return False

    def visit_top(self, node):
        return self.visit(node)

    def make_hole(self, node):
        if self.source is not None and not self.rename and not any(
                isinstance(n, ast.Call) for n in ast.walk(node) if n is not node):
            text = self.source.segment(node)
            if text is not None:
                self.holes.append(text)
                return ast.Name(id=f"{HOLE_PREFIX}{len(self.holes) - 1}__", ctx=ast.Load())
        if self.rename or self.hole_transform:
            node = copy_tree(node)
        if self.rename:
            node = _Renamer(self.rename).visit(node)
        if self.hole_transform:
            node = self.hole_transform(node)
        self.holes.append(ast.unparse(node))
        return ast.Name(id=f"{HOLE_PREFIX}{len(self.holes) - 1}__", ctx=ast.Load())

    def visit(self, node):
        """Parent-side copy of `node`, with hole subtrees replaced by hole references."""
        if self.is_hole(node):
            return self.make_hole(node)
        v = self.visit
        if isinstance(node, (ast.Constant, ast.Name)):
            return node
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id in SAFE_MODULES:
                if node.attr.startswith("_") or not hasattr(SAFE_MODULES[node.value.id], node.attr):
                    raise NotLowerable("unknown module attribute")
            return ast.Attribute(v(node.value), node.attr, ast.Load())
        if isinstance(node, ast.Call):
            args = [self.visit_starred(a) for a in node.args]
            kws = [ast.keyword(k.arg, v(k.value)) for k in node.keywords]
            return ast.Call(v(node.func), args, kws)
        if isinstance(node, (ast.List, ast.Tuple)):
            return type(node)(elts=[self.visit_starred(e) for e in node.elts], ctx=ast.Load())
        if isinstance(node, ast.Set):
            return ast.Set(elts=[self.visit_starred(e) for e in node.elts])
        if isinstance(node, ast.Dict):
            keys = [None if k is None else v(k) for k in node.keys]
            return ast.Dict(keys=keys, values=[v(x) for x in node.values])
        if isinstance(node, ast.UnaryOp):
            return ast.UnaryOp(node.op, v(node.operand))
        if isinstance(node, ast.BinOp):
            return ast.BinOp(v(node.left), node.op, v(node.right))
        if isinstance(node, ast.BoolOp):
            return ast.BoolOp(node.op, [v(x) for x in node.values])
        if isinstance(node, ast.Compare):
            for op, right in zip(node.ops, node.comparators):
                if isinstance(op, (ast.Is, ast.IsNot)) and not (_singleton(right) or _singleton(node.left)):
                    raise NotLowerable("identity test against a non-singleton")
            return ast.Compare(v(node.left), node.ops, [v(c) for c in node.comparators])
        if isinstance(node, ast.IfExp):
            return ast.IfExp(v(node.test), v(node.body), v(node.orelse))
        if isinstance(node, ast.Subscript):
            return ast.Subscript(v(node.value), v(node.slice), ast.Load())
        if isinstance(node, ast.Slice):
            return ast.Slice(*(None if p is None else v(p) for p in (node.lower, node.upper, node.step)))
        raise NotLowerable(type(node).__name__)

    def visit_starred(self, node):
        if isinstance(node, ast.Starred):
            return ast.Starred(self.visit(node.value), ast.Load())
        return self.visit(node)


class _Renamer(ast.NodeTransformer):
    def __init__(self, mapping):
        self.mapping = mapping

    def visit_Name(self, node):
        if node.id in self.mapping:
            return ast.copy_location(ast.Name(id=self.mapping[node.id], ctx=node.ctx), node)
        return node


class SourceText:
    """Source segments by AST position (ast.get_source_segment re-splits the whole text on
    every call, which dominated planning a HumanEval check)."""

    _LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")

    def __init__(self, text):
        self.lines = [line.encode("utf-8") for line in self._LINES.findall(text)]

    def segment(self, node):
        try:
            first, last = node.lineno - 1, node.end_lineno - 1
            col, end_col = node.col_offset, node.end_col_offset
        except AttributeError:
            return None
        if None in (first, last, col, end_col) or last >= len(self.lines):
            return None
        if first == last:
            return self.lines[first][col:end_col].decode("utf-8")
        parts = [self.lines[first][col:], *self.lines[first + 1:last], self.lines[last][:end_col]]
        return b"".join(parts).decode("utf-8")


def copy_tree(node):
    """Copy of an AST (copy.deepcopy is ten times slower on these small trees)."""
    if isinstance(node, ast.AST):
        new = node.__class__()
        for name in node._fields:
            if hasattr(node, name):
                setattr(new, name, copy_tree(getattr(node, name)))
        for name in node._attributes:
            if hasattr(node, name):
                setattr(new, name, getattr(node, name))
        return new
    if isinstance(node, list):
        return [copy_tree(x) for x in node]
    return node


def _singleton(node):
    return isinstance(node, ast.Constant) and any(node.value is s for s in _SINGLETONS)


def literal(expr):
    """Evaluate a hole-free expression (an expected value) in the parent."""
    s = split(expr)
    if s.holes:
        raise NotLowerable("expression depends on the program")
    return evaluate(s.template, {})


def evaluate(template, holes):
    """Evaluate a template; `holes` maps index -> ('v', value) | ('e', info) | ('u', message)."""
    return _Eval(holes).ev(template.body)


class _Eval:
    def __init__(self, holes):
        self.holes = holes

    def ev(self, node):
        meth = getattr(self, "ev_" + type(node).__name__, None)
        if meth is None:
            raise NotLowerable(type(node).__name__)
        return _check_value(meth(node))

    def ev_Constant(self, node):
        return node.value

    def ev_Name(self, node):
        if node.id.startswith(HOLE_PREFIX):
            index = int(node.id[len(HOLE_PREFIX):-2])
            kind, payload = self.holes.get(index, ("e", None))
            if kind == "v":
                return payload
            raise HoleError(index, (kind, payload))
        if node.id in SAFE_FUNCS:
            return SAFE_FUNCS[node.id]
        if node.id in SAFE_MODULES:
            return SAFE_MODULES[node.id]
        raise NotLowerable(node.id)

    def ev_Attribute(self, node):
        base = self.ev(node.value)
        if node.attr.startswith("_") or node.attr in ("format", "format_map"):
            raise NotLowerable(f"attribute {node.attr!r} is not evaluated by the judge")
        if any(base is m for m in SAFE_MODULES.values()) or type(base) in _PLAIN_TYPES:
            return getattr(base, node.attr)
        raise TypeError(f"attribute {node.attr!r} of {type(base).__name__} is not evaluated")

    def ev_List(self, node):
        return self._elts(node.elts)

    def ev_Tuple(self, node):
        return tuple(self._elts(node.elts))

    def ev_Set(self, node):
        return set(self._elts(node.elts))

    def _elts(self, elts):
        out = []
        for e in elts:
            if isinstance(e, ast.Starred):
                out.extend(self.ev(e.value))
            else:
                out.append(self.ev(e))
        return out

    def ev_Dict(self, node):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                out.update(self.ev(v))
            else:
                out[self.ev(k)] = self.ev(v)
        return out

    def ev_UnaryOp(self, node):
        return _UNARY[type(node.op)](self.ev(node.operand))

    def ev_BinOp(self, node):
        a, b = self.ev(node.left), self.ev(node.right)
        _check_size(node.op, a, b)
        return _BINOPS[type(node.op)](a, b)

    def ev_BoolOp(self, node):
        is_and = isinstance(node.op, ast.And)
        value = None
        for v in node.values:
            value = self.ev(v)
            if bool(value) != is_and:
                return value
        return value

    def ev_Compare(self, node):
        left = self.ev(node.left)
        for op, comp in zip(node.ops, node.comparators):
            right = self.ev(comp)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True

    def ev_IfExp(self, node):
        return self.ev(node.body) if self.ev(node.test) else self.ev(node.orelse)

    def ev_Subscript(self, node):
        return self.ev(node.value)[self.ev(node.slice)]

    def ev_Slice(self, node):
        return slice(*(None if p is None else self.ev(p) for p in (node.lower, node.upper, node.step)))

    def ev_Call(self, node):
        func = self.ev(node.func)
        if not _allowed_callable(func):
            raise TypeError(f"{func!r} is not evaluated by the judge")
        args = self._elts(node.args)
        kwargs = {}
        for k in node.keywords:
            if k.arg is None:
                kwargs.update(self.ev(k.value))
            else:
                kwargs[k.arg] = self.ev(k.value)
        _check_call(func, args, kwargs)
        return func(*args, **kwargs)


def _allowed_callable(func):
    if any(func is f for f in SAFE_FUNCS.values()):
        return True
    if type(func) is type(math.sqrt) and getattr(func, "__module__", None) == "math":
        return True
    owner = getattr(func, "__self__", None)  # bound method of a plain builtin value
    return type(func).__name__ in ("builtin_function_or_method", "method-wrapper") and \
        type(owner) in _PLAIN_TYPES


def _check_size(op, a, b):
    """Refuse arithmetic whose result would be enormous (a test typo must not hang the trainer,
    an untrusted value must not stall the judge): over the value caps, TooLarge."""
    if isinstance(op, ast.Pow):
        _check_pow(a, b)
    elif isinstance(op, ast.Mult):
        _check_repeat(a, b)
    elif isinstance(op, ast.LShift) and type(a) is int and type(b) is int and a and \
            b > 0 and a.bit_length() + b > _INT_BITS:
        raise TooLarge(int_too_large(a.bit_length() + b) + " from <<")
    if isinstance(op, ast.Pow) and type(a) is int and type(b) is int and abs(b) > 10_000 and abs(a) > 1:
        raise OverflowError("exponent too large for the judge")
    if isinstance(op, ast.LShift) and type(b) is int and b > 100_000:
        raise OverflowError("shift too large for the judge")
    if isinstance(op, ast.Mult):
        for seq, n in ((a, b), (b, a)):
            if isinstance(seq, (str, bytes, list, tuple)) and type(n) is int and len(seq) * n > _MAX_SEQ:
                raise OverflowError("sequence too large for the judge")


# -- bounded evaluation of templates on untrusted values ----------------------------------------
#
# Hole values were decoded under the value caps (MAX_INT_BITS, MAX_NODES, MAX_CHARS, MAX_DEPTH);
# every operation the template applies to them is checked *before* it runs, so that no result
# can exceed those caps, and every result is checked (shallowly, in O(1)) after. Over the caps:
# TooLarge, which the judge reports as a failed test.

_INT_BITS = MAX_INT_BITS
_MAX_LEN = MAX_NODES
_MAX_CHARS = MAX_CHARS
_POWMOD_WORK = 1 << 24  # exponent bits x modulus bits for pow(a, b, m)
_SEQS = (str, bytes, bytearray, list, tuple)
_WIDTH_METHODS = frozenset({"zfill", "ljust", "rjust", "center", "expandtabs", "to_bytes"})


def _num(n):
    """n for a message (str() of a huge int would itself be refused)."""
    return f"{n:,}" if n.bit_length() <= 64 else f"about 2**{n.bit_length() - 1}"


def _ibits(x):
    return x.bit_length() if type(x) is int else 1


def _check_value(v):
    """Shallow O(1) check of one computed value against the caps."""
    t = type(v)
    if t is int:
        if v.bit_length() > _INT_BITS:
            raise TooLarge(int_too_large(v.bit_length()))
    elif t in (str, bytes, bytearray):
        if len(v) > _MAX_CHARS:
            raise TooLarge(f"value too large: {t.__name__} of {len(v):,} characters "
                                  f"(cap {_MAX_CHARS:,})")
    elif t in (list, tuple, dict, set, frozenset, range):
        if len(v) > _MAX_LEN:
            raise TooLarge(f"value too large: {t.__name__} of {len(v):,} items "
                                  f"(cap {_MAX_LEN:,})")
    return v


def _check_pow(a, b, m=None):
    if type(a) is int and type(b) is int and b > 0 and abs(a) > 1:
        if m is not None:
            if type(m) is int and b.bit_length() * max(m.bit_length(), 64) > _POWMOD_WORK:
                raise TooLarge(f"value too large: pow() with a {b.bit_length():,}-bit "
                                      f"exponent and a {m.bit_length():,}-bit modulus")
            return
        bits = (a.bit_length() - 1) * b + 1  # at least this many bits in the result
        if bits > _INT_BITS:
            raise TooLarge(f"value too large: int of at least {bits:,} bits "
                                  f"(cap {_INT_BITS:,}) from **")


def _check_repeat(a, b):
    for seq, n in ((a, b), (b, a)):
        if isinstance(seq, _SEQS) and type(n) in (int, bool):
            size = len(seq) * n
            cap = _MAX_CHARS if isinstance(seq, (str, bytes, bytearray)) else _MAX_LEN
            if size > cap:
                raise TooLarge(f"value too large: {type(seq).__name__} of {_num(size)} "
                                      f"items from * (cap {cap:,})")


def _lgamma_bits(n):
    return math.lgamma(n + 1) / math.log(2) if n > 0 else 0.0


def _check_call(func, args, kwargs):
    """Refuse a call whose result would exceed the caps (`args` is a list; may be rewritten)."""
    name = getattr(func, "__name__", "")
    owner = getattr(func, "__self__", None)
    ints = [a for a in args if type(a) is int]
    if func is pow:
        _check_pow(*args[:3], **{k: v for k, v in kwargs.items() if k == "mod"})
        if "exp" in kwargs and args:
            _check_pow(args[0], kwargs["exp"], kwargs.get("mod"))
    elif func is range:
        r = range(*args, **kwargs)
        n = (r.stop - r.start) // r.step  # len() would refuse more than sys.maxsize
        if n > _MAX_LEN:
            raise TooLarge(f"value too large: range of {_num(n)} items (cap {_MAX_LEN:,})")
    elif func is bytes and len(args) == 1 and type(args[0]) is int and args[0] > _MAX_CHARS:
        raise TooLarge(f"value too large: bytes of {_num(args[0])} (cap {_MAX_CHARS:,})")
    elif owner is math:
        if name == "factorial" and ints and _lgamma_bits(ints[0]) > _INT_BITS:
            raise TooLarge(f"value too large: factorial({_num(ints[0])}) (cap {_INT_BITS:,} bits)")
        if name in ("comb", "perm") and ints and ints[0] > 0 and \
                _lgamma_bits(ints[0]) - (_lgamma_bits(ints[0] - ints[1]) if len(ints) > 1 and
                                          0 <= ints[1] <= ints[0] else 0) > _INT_BITS:
            raise TooLarge(f"value too large: {name}({_num(ints[0])}, ...) "
                                  f"(cap {_INT_BITS:,} bits)")
        if name in ("prod", "lcm"):
            if name == "prod" and args:
                args[0] = items = list(args[0])  # consumed here, so passed on as a list
            else:
                items = args
            bits = sum(_ibits(x) for x in items if type(x) is int)
            if bits > _INT_BITS:
                raise TooLarge(f"value too large: math.{name} of {bits:,} bits of "
                                      f"factors (cap {_INT_BITS:,})")
    elif type(owner) in _SEQS + (int,) and name in _WIDTH_METHODS:
        width = next((a for a in list(args) + list(kwargs.values()) if type(a) is int), 0)
        if width > _MAX_CHARS:
            raise TooLarge(f"value too large: {name}({_num(width)}) (cap {_MAX_CHARS:,})")
    elif type(owner) in (str, bytes) and name == "replace" and len(args) >= 2:
        size = len(owner) + (len(owner) + 1) * len(args[1])
        if size > _MAX_CHARS and len(args[1]) > len(args[0]):
            raise TooLarge(f"value too large: replace() could make {size:,} characters "
                                  f"(cap {_MAX_CHARS:,})")
