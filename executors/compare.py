"""How the judge compares: EvalPlus equality for call tests, line-wise output for stdio tests.

Both run in the judge process on exact builtins decoded from the child's answers (values.decode).
"""
import math
import re

_FLOAT_TOKEN = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.I)
_SPLIT_WS = re.compile(r"(\s+)")


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
    try:  # equal as they are: equal once tuples are lists too (the common case, no copies)
        if actual == expected:
            return True
    except RecursionError:
        raise
    except Exception:
        return False
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
