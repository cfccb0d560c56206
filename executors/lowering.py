"""Turn each TestCase into what the child runs (a spec without expected values) and a plan for
how the parent judges what comes back.

Assertions and HumanEval `check` functions are split (see safe_eval) whenever the parent can
evaluate their trusted side; only what cannot be split runs whole in the child, with every call
result passed through `values.guard`, and is marked judged_by="child".
"""
import ast
import dataclasses
import functools
import re
from typing import Any, List, Optional

from executors import safe_eval, values
from executors.child import GUARD_NAME, TEST_FUNC
from executors.testcase import TestCase


@dataclasses.dataclass
class Check:
    """One parent-judged assertion: template plus the hole indices it owns in the spec."""

    text: str                  # the assertion as shown in feedback
    split: safe_eval.Split
    offset: int                # index of its first hole in the spec's expression list


@dataclasses.dataclass
class Plan:
    test: TestCase
    spec: Optional[dict]       # None: the test is invalid and is not run
    judged_by: str
    text: str                  # the test as shown in feedback
    checks: List[Check] = dataclasses.field(default_factory=list)
    invalid: str = ""
    expected: Any = None


class _GuardCalls(ast.NodeTransformer):
    """Wrap call results in the guard, so test code only ever compares builtin values.

    Arguments of a call to a plain name that is not a safe builtin (the program's functions and
    classes, `candidate`) are left alone: they flow into program code, which may legitimately
    take the program's own objects (MBPP's `max_chain_length([Pair(5, 24), ...], 4)`).
    """

    def __init__(self, wrap_top=True):
        self.wrap_top = wrap_top
        self.depth = 0

    def visit_Call(self, node):
        into_program = isinstance(node.func, ast.Name) and node.func.id not in safe_eval.SAFE_FUNCS
        top = self.depth == 0
        self.depth += 1
        node.func = self.visit(node.func)
        if not into_program:
            node.args = [self.visit(a) for a in node.args]
            node.keywords = [self.visit(k) for k in node.keywords]
        self.depth -= 1
        if top and not self.wrap_top:
            return node
        return ast.copy_location(ast.Call(ast.Name(GUARD_NAME, ast.Load()), [node], []), node)


def guard_calls(tree, wrap_top=True):
    return ast.fix_missing_locations(_GuardCalls(wrap_top).visit(tree))


def guarded_test_source(tree, returns=None):
    """Test code as `def TEST_FUNC(GUARD_NAME): ...` with call results guarded.

    The guard arrives as a parameter, so the program cannot swap it by rebinding a global while
    a test runs. (Where the body cannot live in a function, e.g. `from m import *`, the code
    runs at module level and reads the guard from the namespace instead.) Returns (source,
    wrapped).
    """
    body = guard_calls(tree).body
    if returns:
        body = body + [ast.Return(ast.Name(returns, ast.Load()))]
    func = ast.FunctionDef(
        name=TEST_FUNC, args=ast.arguments(posonlyargs=[], args=[ast.arg(GUARD_NAME)], vararg=None,
                                           kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]),
        body=body or [ast.Pass()], decorator_list=[], returns=None, type_comment=None)
    wrapped = ast.unparse(ast.fix_missing_locations(ast.Module(body=[func], type_ignores=[])))
    try:
        compile(wrapped, "<test>", "exec")
    except (SyntaxError, ValueError):
        return ast.unparse(ast.Module(body=guard_calls(tree).body, type_ignores=[])), False
    return wrapped, True


class _Unguard(ast.NodeTransformer):
    def __init__(self, rename):
        self.rename = rename

    def visit_Call(self, node):
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id == GUARD_NAME and len(node.args) == 1:
            return node.args[0]
        return node

    def visit_Name(self, node):
        return ast.Name(self.rename.get(node.id, node.id), node.ctx)


def display_line(line, test):
    """A source line of rewritten test code as the model should see it: without the guard
    calls, and with check's parameter called by the function's own name."""
    rename = {}
    if test.kind == "check":
        try:
            checks = [n for n in ast.walk(ast.parse(test.source))
                      if isinstance(n, ast.FunctionDef) and n.name == "check" and n.args.args]
            if checks:
                rename = {checks[-1].args.args[0].arg: test.entry_point}
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass
    try:
        return ast.unparse(_Unguard(rename).visit(ast.parse(line.strip())))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return line.replace(GUARD_NAME, "").strip()


def defined_names(sources, tests=()):
    """Names a program defines that its tests could mistake for builtins (a test's `sum` may
    mean the program's own). Only names the tests use are looked for, and the program is
    parsed only when its text mentions one of them."""
    wanted = set(safe_eval.SAFE_FUNCS) | set(safe_eval.SAFE_MODULES)
    if tests:
        wanted &= set().union(*(names_used(t.source) for t in tests if t.kind in ("assertion", "check")))
    text = "\n".join(sources)
    if not any(name in text for name in wanted):
        return frozenset()
    names = set()
    for src in sources:
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.Global):
                names.update(node.names)
    return frozenset(names & wanted)


def plan(test: TestCase, shadowed=frozenset()) -> Plan:
    """How `test` is run and judged. `shadowed`: names the program defines (see defined_names)."""
    if test.kind in ("assertion", "check"):
        # the same tests come back for every sample of a problem: plan each source once
        relevant = frozenset(shadowed) & names_used(test.source)
        cached = _plan_source(test.kind, test.source, test.entry_point, relevant)
        return dataclasses.replace(cached, test=test)
    if test.kind == "call":
        return _plan_call(test)
    return Plan(test, {"kind": "stdio", "stdin": test.stdin}, "parent",
                _stdio_text(test.stdin, test.expected_stdout))


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@functools.lru_cache(maxsize=8192)
def names_used(source):
    """Every identifier in a test's source (a superset of its names: enough to know which of
    the program's own names can matter to it)."""
    return frozenset(_IDENTIFIER.findall(source))


@functools.lru_cache(maxsize=8192)
def _plan_source(kind, source, entry_point, shadowed):
    test = TestCase(kind, source=source, entry_point=entry_point)
    if kind == "assertion":
        return _plan_assertion(test, shadowed)
    return _plan_check(test, shadowed)


def _invalid(test, text, why):
    return Plan(test, None, "parent", text, invalid=why)


def _parse(source):
    try:
        return ast.parse(source), ""
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        return None, f"{type(e).__name__}: {e}"


def _guard_hole(node):
    """A hole's inner call results are guarded (len(obj) must not ask obj); its own value is
    checked strictly when encoded."""
    return guard_calls(node, wrap_top=False)


def _split_assert(stmt, shadowed, source):
    return safe_eval.split(stmt.test, shadowed=shadowed, hole_transform=_guard_hole, source=source)


def _segment(source, node):
    """The source text of `node` (None when it spans lines inside a block: not standalone)."""
    text = source.segment(node)
    if text is None or ("\n" in text and node.col_offset):
        return None
    return text


def _plan_assertion(test, shadowed):
    text = test.source.strip()
    tree, err = _parse(test.source)
    if tree is None:
        return _invalid(test, text, f"the test does not parse ({err})")
    if not tree.body:
        return _invalid(test, text, "the test is empty")
    if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert):
        try:
            split = _split_assert(tree.body[0], shadowed, safe_eval.SourceText(test.source))
        except safe_eval.NotLowerable:
            pass
        else:
            return Plan(test, {"kind": "exprs", "exprs": split.holes}, "parent", text,
                        [Check(text, split, 0)])
    src, wrapped = guarded_test_source(tree)
    return Plan(test, {"kind": "exec", "src": src, "wrapped": wrapped}, "child", text)


def _plan_check(test, shadowed):
    text = f"check({test.entry_point})"
    tree, err = _parse(test.source)
    if tree is None:
        return _invalid(test, text, f"the test code does not parse ({err})")
    checks = [s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == "check"]
    if not checks:
        return _invalid(test, text, "the test code defines no check(candidate)")
    lowered = _lower_check(tree, checks[-1], test.entry_point, shadowed,
                           safe_eval.SourceText(test.source))
    if lowered is not None:
        pre, param, split_checks = lowered
        exprs = [h for c in split_checks for h in c.split.holes]
        return Plan(test, {"kind": "exprs", "pre": pre, "exprs": exprs,
                           "bind": [param, test.entry_point]}, "parent", text, split_checks)
    src, wrapped = guarded_test_source(tree, returns="check")
    return Plan(test, {"kind": "check", "src": src, "wrapped": wrapped,
                       "entry": test.entry_point}, "child", text)


def _lower_check(tree, check_def, entry, shadowed, source):
    """(preamble source, check's parameter, checks) when check's body is only asserts the parent
    can judge. The child evaluates the asserts' holes with the parameter bound to `entry`."""
    args = check_def.args
    if len(args.args) != 1 or args.vararg or args.kwarg or args.kwonlyargs or check_def.decorator_list:
        return None
    param = args.args[0].arg
    if param.startswith("__") or param == entry:
        return None
    pre = [s for s in tree.body if s is not check_def]
    checks = []
    offset = 0
    calls = re.compile(rf"\b{re.escape(param)}(?=\s*\()")
    for stmt in check_def.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            pre.append(stmt)
        elif isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            continue
        elif isinstance(stmt, ast.Assert):
            try:
                split = _split_assert(stmt, set(shadowed) | {param}, source)
            except safe_eval.NotLowerable:
                return None
            shown = _segment(source, stmt.test)
            if shown is None:
                shown = ast.unparse(_Rename(param, entry).visit(safe_eval.copy_tree(stmt.test)))
            else:
                shown = calls.sub(entry, shown)
            checks.append(Check(f"assert {shown}", split, offset))
            offset += len(split.holes)
        else:
            return None
    if not checks:
        return None
    if any(_mentions(s, param) for s in pre):
        return None
    parts = [_segment(source, s) for s in pre]
    if any(p is None for p in parts):
        return ast.unparse(ast.Module(body=pre, type_ignores=[])), param, checks
    return "\n".join(parts), param, checks


class _Rename(ast.NodeTransformer):
    def __init__(self, old, new):
        self.old, self.new = old, new

    def visit_Name(self, node):
        return ast.Name(self.new, node.ctx) if node.id == self.old else node


def _mentions(stmt, name):
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(stmt))


def _plan_call(test):
    try:
        args = values.encode(list(test.args))
    except (values.UnsupportedValue, RecursionError) as e:
        return _invalid(test, f"{test.entry_point}(...)", f"the arguments are not plain values ({e})")
    text = call_text(test)
    if test.expected is not TestCase.NO_EXPECTED:
        try:
            values.encode(test.expected)
        except (values.UnsupportedValue, RecursionError) as e:
            return _invalid(test, text, f"the expected value is not a plain value ({e})")
    return Plan(test, {"kind": "call", "fn": test.entry_point, "args": args}, "parent", text,
                expected=test.expected)


def short_repr(value, limit=300):
    try:
        text = repr(value)
    except Exception:  # a pathological value from a test definition
        text = "<unprintable>"
    return text if len(text) <= limit else text[:limit] + "..."


def call_text(test):
    args = ", ".join(short_repr(a, 200) for a in test.args)
    call = f"{test.entry_point}({args})"
    if test.expected is TestCase.NO_EXPECTED:
        return call
    return f"assert {call} == {short_repr(test.expected)}"


def _stdio_text(stdin, expected):
    def clip(s):
        return s if len(s) <= 500 else s[:500] + "..."

    return f"Input:\n{clip(stdin)}\nExpected output:\n{clip(expected)}"
