"""The trusted side: turn what a child reported into verdicts, comparing in the parent.

Everything compared here was rebuilt from tagged JSON into exact builtins (values.decode), and
expected values never left this process.
"""
import math
import re

from executors import lowering, safe_eval, values
from executors.testcase import NO_EXPECTED, TestResult

_FLOAT_TOKEN = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.I)
_SPLIT_WS = re.compile(r"(\s+)")


def judge(plan, raw, limits):
    """TestResult for one planned test and the worker's raw report (None: invalid test)."""
    if plan.spec is None:
        return TestResult("error", f"invalid test: {plan.invalid}", judged_by=plan.judged_by)
    dt = float(raw.get("dt") or 0.0)
    result = _judge(plan, raw, limits)
    line = _failing_line(result.traceback) if plan.judged_by == "child" else ""
    result.test = result.test or (line and lowering.display_line(line, plan.test)) or plan.text
    result.duration = dt
    result.judged_by = plan.judged_by
    return result


def _judge(plan, raw, limits):
    if "timeout" in raw:
        which = raw["timeout"]
        if which == "load":
            return TestResult("timeout", f"Timed out after {limits.load_timeout:g} s while "
                                         "loading the program")
        if which == "program":
            return TestResult("timeout", "Program time limit exceeded before this test ran")
        return TestResult("timeout", f"Timed out after {limits.per_test_timeout:g} s")
    if "crash" in raw:
        return TestResult("error", str(raw["crash"]))
    kind = plan.spec["kind"]
    if "e" in raw:  # the load failed, or the test code itself raised
        return _exception(raw["e"], assertion_fails=kind in ("exec", "check") and not raw.get("load_error"))
    if kind in ("exec", "check"):
        return TestResult("passed") if raw.get("ok") is True else TestResult("error", "no verdict")
    if kind == "stdio":
        return _judge_stdio(plan, raw)
    vals = _holes(raw.get("vals"))
    if kind == "call":
        return _judge_call(plan, vals)
    return _judge_exprs(plan, vals)


def _failing_line(tb):
    """For child-judged test code: the source line of the innermost test frame."""
    lines = tb.splitlines()
    for k in range(len(lines) - 1, -1, -1):
        if lines[k].lstrip().startswith('File "<test>"') and k + 1 < len(lines):
            line = lines[k + 1].strip()
            return line if line.startswith("assert") else ""
    return ""


def _exception(info, assertion_fails):
    info = info if isinstance(info, dict) else {}
    etype = str(info.get("type", "Exception"))
    msg = str(info.get("msg", ""))
    text = f"{etype}: {msg}" if msg else etype
    status = "failed" if assertion_fails and etype == "AssertionError" else "error"
    return TestResult(status, text, traceback=str(info.get("tb", "")))


def _holes(vals):
    """index -> ('v', value) | ('e', info) | ('u', message) from the child's list."""
    out = {}
    if not isinstance(vals, list):
        return out
    for i, item in enumerate(vals):
        if not isinstance(item, dict):
            continue
        if "v" in item:
            try:
                out[i] = ("v", values.decode(item["v"]))
            except values.TooLarge as e:
                out[i] = ("u", str(e))
            except ValueError as e:
                out[i] = ("u", str(e))
        elif "e" in item:
            out[i] = ("e", item["e"])
        elif "u" in item:
            out[i] = ("u", str(item["u"]))
    return out


def _unsupported(message):
    return TestResult("failed", f"Actual output is not a plain value: {message}")


def _judge_exprs(plan, vals):
    actual = None
    for check in plan.checks:
        holes = {k: vals.get(check.offset + k, ("e", None)) for k in range(len(check.split.holes))}
        main = holes.get(check.split.main_hole) if check.split.main_hole is not None else None
        actual = main[1] if main and main[0] == "v" else None
        try:
            ok = bool(safe_eval.evaluate(check.split.template, holes))
        except (values.TooLarge, OverflowError, MemoryError) as e:
            # over the caps, or too large for a float: a failed test, never a stall or a crash
            return TestResult("failed", _too_large(e), actual=actual, test=check.text)
        except safe_eval.HoleError as e:
            kind, payload = e.info
            if kind == "u":
                return _unsupported(payload)
            if payload is None:
                return TestResult("error", "the test was not evaluated")
            return _exception(payload, assertion_fails=False)
        except Exception as e:  # the comparison itself raised, as it would have in Python
            return TestResult("error", f"{type(e).__name__}: {e}", actual=actual)
        if not ok:
            return TestResult("failed", f"Actual output: {_short(actual)}", actual=actual,
                              test=check.text)
    return TestResult("passed", actual=actual)


def _judge_call(plan, vals):
    kind, payload = vals.get(0, ("e", None))
    if kind == "u":
        return _unsupported(payload)
    if kind == "e":
        if payload is None:
            return TestResult("error", "the call was not evaluated")
        return _exception(payload, assertion_fails=False)
    if plan.expected is NO_EXPECTED:
        return TestResult("passed", actual=payload)
    try:
        ok = evalplus_equal(payload, plan.expected, plan.test.atol)
    except (values.TooLarge, OverflowError, MemoryError, RecursionError) as e:
        return TestResult("failed", _too_large(e), actual=payload)
    if ok:
        return TestResult("passed", actual=payload)
    return TestResult("failed", f"Actual output: {_short(payload)}", actual=payload)


def _judge_stdio(plan, raw):
    out = raw.get("out")
    if not isinstance(out, str):
        return TestResult("error", "no output was reported")
    if raw.get("exit") != 0:
        err = str(raw.get("err") or "")
        last = err.strip().splitlines()[-1] if err.strip() else f"exit code {raw.get('exit')}"
        return TestResult("error", last, actual=out, traceback=err)
    if raw.get("trunc"):
        return TestResult("failed", "Output limit exceeded", actual=out)
    if stdio_equal(out, plan.test.expected_stdout, plan.test.float_tol):
        return TestResult("passed", actual=out)
    return TestResult("failed", f"Actual output: {_short(out)}", actual=out)


def _short(value, limit=300):
    if type(value) is int and value.bit_length() > 10_000:  # str() of it would be refused
        return f"<int of {value.bit_length():,} bits>"
    return lowering.short_repr(value, limit)


def _too_large(e):
    if isinstance(e, values.TooLarge):
        return str(e)
    if isinstance(e, MemoryError):
        return "value too large: the judge ran out of memory comparing it"
    return f"value too large: {type(e).__name__}: {e}"


# -- EvalPlus semantics for call tests ----------------------------------------------------------

def _lists(x):
    if isinstance(x, (list, tuple)):
        return [_lists(e) for e in x]
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    return x


def is_floats(x):
    """A float, or a non-empty list/tuple whose leaves are all floats."""
    if type(x) is float:
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(is_floats(e) for e in x)
    return False


def evalplus_equal(actual, expected, atol=0.0):
    """Exact equality after tuples become lists; floats: |a-e| <= atol + 1e-7 |e|."""
    a, e = _lists(actual), _lists(expected)
    try:
        if a == e:
            return True
    except Exception:
        return False
    if not is_floats(expected):
        return False
    return _close(a, e, atol or 1e-6)


def _close(a, e, atol):
    if isinstance(e, list):
        return isinstance(a, list) and len(a) == len(e) and all(_close(x, y, atol) for x, y in zip(a, e))
    if type(a) not in (int, float) or type(e) not in (int, float):
        return False
    try:  # an int too large for a float is not close to any float
        a, e = float(a), float(e)
    except OverflowError:
        return False
    if math.isnan(e) or math.isnan(a):
        return False
    if math.isinf(e) or math.isinf(a):
        return a == e
    return abs(a - e) <= atol + 1e-7 * abs(e)


# -- stdio semantics --------------------------------------------------------------------------

def _lines(text):
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def stdio_equal(actual, expected, float_tol=1e-6):
    """Line-wise equality (trailing whitespace and blank lines ignored); tokens that are floats
    in the expected output may differ by `float_tol` (absolute, or relative for large values)."""
    got, want = _lines(actual), _lines(expected)
    if len(got) != len(want):
        return False
    return all(g == w or _line_close(g, w, float_tol) for g, w in zip(got, want))


def _line_close(got, want, tol):
    g_parts, w_parts = _SPLIT_WS.split(got), _SPLIT_WS.split(want)
    if len(g_parts) != len(w_parts):
        return False
    for k, (g, w) in enumerate(zip(g_parts, w_parts)):
        if g == w:
            continue
        if k % 2 == 1 or not _is_float_token(w) or not _FLOAT_TOKEN.match(g):
            return False  # separators must match exactly; only float tokens get tolerance
        gv, wv = float(g), float(w)
        if math.isnan(gv) or math.isnan(wv) or math.isinf(gv) or math.isinf(wv):
            if not (gv == wv):
                return False
        elif abs(gv - wv) > tol * max(1.0, abs(wv)):
            return False
    return True


def _is_float_token(tok):
    return bool(_FLOAT_TOKEN.match(tok)) and any(c in tok for c in ".eEnN")
