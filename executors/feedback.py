"""Execution feedback for refinement prompts, in the Self-Debugging unit-test style.

Short on purpose: only the first test that did not pass, with the actual output, the error and
its last traceback lines, or the time limit.
"""
_MAX_ACTUAL = 300
_TB_LINES = 4
# a test after a fail_fast stop (the judge's, and a split program's merged parts: `pool._SplitRun`)
SKIPPED_AFTER_FAILURE = "not run: an earlier test did not pass (fail_fast)"


def feedback(tests, kinds):
    """Feedback text for a program's TestResults (`kinds`: the TestCase kind of each)."""
    for result, kind in zip(tests, kinds):
        if result.status != "passed":
            return for_test(result, kind)
    return ""


def for_test(result, kind):
    if kind == "stdio":
        head = f"The code above fails the given test case:\n{result.test}\n"
    else:
        head = f"The code above fails the given unit test:\n{result.test}\n"
    if result.status == "timeout":
        return head + f"# {result.message}"
    if result.status == "failed":
        if kind == "stdio" and result.message.startswith("Actual output"):
            return head + "# Actual output:\n" + _clip(str(result.actual).rstrip("\n"))
        return head + f"# {result.message}"
    lines = [ln for ln in result.traceback.rstrip().splitlines()
             if ln.strip() and ln.strip(" ~^")]  # drop blank lines and caret markers
    tb = "\n".join(lines[-_TB_LINES:])
    text = head + f"# Error: {result.message}"
    if tb:
        text += "\n# Traceback (last lines):\n" + tb
    return text


def _clip(text, limit=_MAX_ACTUAL * 3):
    return text if len(text) <= limit else text[:limit] + "..."


def test_text(test):
    """How a test is shown when nothing more specific is known (e.g. which assert failed)."""
    if test.kind == "assertion":
        return test.source.strip()
    if test.kind == "check":
        return f"check({test.entry_point})"
    if test.kind == "stdio":
        return f"Input:\n{_clip(test.stdin, 500)}\nExpected output:\n{_clip(test.expected_stdout, 500)}"
    args = ", ".join(short_repr(a, 200) for a in test.args)
    call = f"{test.entry_point}({args})"
    if test.expected is test.NO_EXPECTED:
        return call
    return f"assert {call} == {short_repr(test.expected)}"


def short_repr(value, limit=300):
    try:
        text = repr(value)
    except BaseException:  # a pathological value (a program's, whose repr may time out)
        text = "<unprintable>"
    return text if len(text) <= limit else text[:limit] + "..."
