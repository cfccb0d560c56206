"""Typed values across the sandbox boundary (plain values and handles), and the authenticated
frames."""
import collections
import json
import math
import os
import time

import pytest

from executors import protocol, values


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2 ** 100, -(3 ** 90), 1.5, -0.0, float("inf"), 1 + 2j, "",
    "héllo \ud800", b"\x00\xff", [], [1, [2, [3]]], (), (1, (2.5, "x")), {"a": 1, (1, 2): [3]},
    {1, 2, 3}, frozenset({(1, 2), "x"}), {frozenset({1}): {2: (3,)}},
])
def test_roundtrip_keeps_exact_types(value):
    back = values.loads(values.dumps(value))
    assert back == value
    assert _shape(back) == _shape(value)


def _shape(v):
    if isinstance(v, dict):
        return ("dict", sorted((repr(_shape(k)), repr(_shape(x))) for k, x in v.items()))
    if isinstance(v, (list, tuple, set, frozenset)):
        return (type(v).__name__, sorted(repr(_shape(x)) for x in v))
    return type(v).__name__


def test_nan_survives():
    assert math.isnan(values.loads(values.dumps(float("nan"))))


def test_subclasses_become_their_builtin_base_without_their_methods():
    class Sneaky(int):
        def __eq__(self, other):
            return True
        __hash__ = int.__hash__

    class Loud(str):
        def __str__(self):
            return "forged"

    class Rows(list):
        def __iter__(self):
            return iter(["forged"])

    point = collections.namedtuple("Point", "x y")
    back = values.loads(values.dumps([Sneaky(5), Loud("real"), Rows([1, 2]), point(1, 2),
                                      collections.OrderedDict(a=1), collections.Counter("aa")]))
    assert back == [5, "real", [1, 2], (1, 2), {"a": 1}, {"a": 2}]
    assert [type(x) for x in back] == [int, str, list, tuple, dict, dict]


def test_objects_outside_the_closed_set_are_refused():
    class Always:
        def __eq__(self, other):
            return True

    for bad in (Always(), [1, Always()], {"k": Always()}, object(), len, iter([1]), range(0)):
        with pytest.raises(values.UnsupportedValue):
            values.encode(bad)


def test_objects_outside_the_closed_set_cross_as_handles_when_asked():
    """The child's side: each such object becomes {"h": payload}; the judge's side rebuilds
    whatever its `handles` makes of the payload, inside containers too."""
    class Point:
        pass

    kept = []

    def handle(obj):
        kept.append(obj)
        return [len(kept) - 1, type(obj).__name__, None]

    p = Point()
    enc = values.encode([1, p, {"k": (p, len)}], handles=handle)
    assert enc == [1, {"h": [0, "Point", None]}, {"d": [["k", {"t": [{"h": [1, "Point", None]},
                                                                    {"h": [2, "builtin_function_or_method", None]}]}]]}]
    assert kept == [p, p, len]
    back = values.decode(enc, handles=lambda payload: ("proxy", payload[0]))
    assert back == [1, ("proxy", 0), {"k": (("proxy", 1), ("proxy", 2))}]
    with pytest.raises(ValueError, match="malformed"):
        values.decode(enc)  # without `handles`, a handle is malformed


def test_size_and_depth_caps():
    with pytest.raises(values.UnsupportedValue, match="too large"):
        values.encode(["x" * 100] * 100, max_chars=1000)
    deep = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(values.UnsupportedValue, match="deeply"):
        values.encode(deep)
    loop = []
    loop.append(loop)
    with pytest.raises(values.UnsupportedValue):
        values.encode(loop)


@pytest.mark.parametrize("text", [
    '{"t": [1], "x": 2}', '{"q": 1}', '{"d": [[[], 1]]}', '{"c": ["a", 1]}', '{"b": "!!"}', "[" * 5000,
])
def test_decode_rejects_malformed_input(text):
    with pytest.raises(ValueError):
        values.loads(text)


def test_frames_are_authenticated_and_ordered():
    key = os.urandom(32)
    sign = protocol.make_signer(key)
    good = [protocol.encode_frame({"n": i}, sign, i) for i in range(3)]

    def read_all(chunks, key=key):
        r, w = os.pipe()
        os.write(w, b"".join(chunks))
        os.close(w)
        reader = protocol.FrameReader(r, key=key)
        out = []
        try:
            while True:
                out.append(reader.read(deadline=None))
        except protocol.ChannelError as e:
            out.append(str(e))
        finally:
            os.close(r)
        return out

    assert read_all(good) == [{"n": 0}, {"n": 1}, {"n": 2}, "closed"]
    assert read_all([good[1], good[0]])[0] == "frame failed authentication"  # replayed out of order
    assert read_all(good, key=os.urandom(32))[0] == "frame failed authentication"
    forged = protocol.encode_frame({"n": 9})  # well-formed, unsigned
    assert read_all([good[0], forged])[1] in ("frame failed authentication", "frame too short")
    tampered = bytearray(good[0])
    tampered[6] ^= 1
    assert read_all([bytes(tampered)])[0] == "frame failed authentication"
    assert "exceeds the limit" in read_all([b"passed\n"])[0]  # printed text is no frame


def test_frame_size_is_capped():
    r, w = os.pipe()
    os.write(w, (protocol.MAX_FRAME + 1).to_bytes(4, "big"))
    os.close(w)
    with pytest.raises(protocol.ChannelError, match="exceeds"):
        protocol.FrameReader(r).read()
    os.close(r)
    assert json.loads(protocol.encode_frame({"a": 1})[4:]) == {"a": 1}


_FLAT_LISTS = [4 * x for x in (  # long enough for the whole-list path (values._WHOLE_LIST_MIN)
    [1, 2, 3], [True, False, 1, 0], [None, 1.5, float("inf"), "ab", -3], ["x", "yz", ""],
    [2 ** 62 - 1, -(2 ** 62) + 1], [2 ** 62, 1], [1, -(2 ** 62)], [2 ** 70, "a", True],
    [[1, 2], [3, "a"]], [(1, 2), (3,)], [{1, 2}, frozenset({"a"})], [1, [2, [3, [4]]]],
    [1.5, 2], [[list(range(9))] * 3], [[0, 1], [1, "x", None], []], [[1, [2]], [3]],
    [[2 ** 62], [1]], [[1.5], [True, "ab"]],
)]


@pytest.mark.parametrize("value", _FLAT_LISTS + [tuple(x) for x in _FLAT_LISTS]
                         + [set(range(-5, 9)), set("abcdefghij"), frozenset(_FLAT_LISTS[2]),
                            list(range(7)), {"k": list(range(20))}])
def test_untagged_lists_take_the_same_path_as_item_by_item(value, monkeypatch):
    """The whole-list fast path gives what one item at a time gives: the same encoding, the
    same decoded value, and the same budget (a cap one short of the value's size refuses it)."""
    fast_enc = values.encode(value)
    fast_back = values.decode(json.loads(json.dumps(fast_enc)))
    nodes = _count_nodes(fast_enc)
    with monkeypatch.context() as m:
        m.setattr(values, "_untagged_items", lambda *a: None)
        slow_enc = values.encode(value)
        slow_back = values.decode(json.loads(json.dumps(slow_enc)))
        for caps in ({"max_nodes": nodes}, {"max_nodes": nodes - 1}, {"max_chars": 2},
                     {"max_depth": 1}, {"max_int_bits": 62}):
            slow = _outcome(values.encode, value, caps), _outcome(values.decode, slow_enc, caps)
            m.undo()
            fast = _outcome(values.encode, value, caps), _outcome(values.decode, slow_enc, caps)
            m.setattr(values, "_untagged_items", lambda *a: None)
            assert fast == slow, caps
    assert fast_enc == slow_enc
    assert fast_back == slow_back == value and _shape(fast_back) == _shape(value)


def _count_nodes(enc):
    if type(enc) is list:
        return 1 + sum(map(_count_nodes, enc))
    if type(enc) is dict:
        (tag, x), = enc.items()
        return 1 + (sum(map(_count_nodes, x)) if tag in "tsf" else 0)
    return 1


def _outcome(fn, value, caps):
    try:
        return "ok", fn(value, **caps)
    except (values.UnsupportedValue, values.TooLarge) as e:
        return type(e).__name__


def test_an_encoded_list_is_a_copy(monkeypatch):
    """A program may keep the list it returned and change it in a later call: the answer sent
    is the list as it was returned (the whole-list path, which these lists take, copies)."""
    taken = []
    fast = values._untagged_items
    monkeypatch.setattr(values, "_untagged_items", lambda *a: taken.append(fast(*a)) or list(taken[-1]))
    answer = list(range(10))
    encoded = values.encode(answer)
    answer.append(10)
    assert encoded == list(range(10))
    raw = list(range(10))
    back = values.decode(raw)
    back.append(10)
    assert raw == list(range(10))
    assert taken == [list(range(10))] * 2


def test_relayed_frames_carry_a_head_and_an_unread_body():
    payload = protocol.relayed({"n": 7, "k": 2}, protocol.dumps([{"v": 1}, {"v": [2]}]))
    head, body = protocol.split_relayed(payload)
    assert head == {"n": 7, "k": 2} and json.loads(body) == [{"v": 1}, {"v": [2]}]
    assert protocol.split_relayed(protocol.dumps({"op": "end"})) == ({"op": "end"}, None)
    for bad in (b"[1]\n{}", b"{oops\n[]", b""):
        with pytest.raises(protocol.ChannelError):
            protocol.split_relayed(bad)


def test_the_judge_reads_only_well_formed_answers():
    """What a child's relayed frame carries reaches the test only if it is the answers its head
    announces; anything else is the program's malformed answer (None here)."""
    from executors.remote import _answers

    assert _answers({"i": 3, "k": 2}, b'[{"v":1},{"e":{}}]') == [{"v": 1}, {"e": {}}]
    assert _answers({"k": 1, "g": 2, "dt": 0.5}, b'{"v":[1]}') == {"v": [1], "g": 2, "dt": 0.5}
    for head, body in (({"i": 0, "k": 2}, b'[{"v":1}]'), ({"i": 0, "k": 1}, b'[1]'),
                       ({"i": 0, "k": 0}, b'[]'), ({"k": 1}, b'[{"v":1}]'), ({"k": 1}, b"{"),
                       ({"k": 1}, b"[" * 100_000)):
        assert _answers(head, body) is None, (head, body[:20])


def test_a_read_gives_way_to_input_on_the_interrupt_channel():
    data_r, data_w = os.pipe()
    ctl_r, ctl_w = os.pipe()
    try:
        reader, control = protocol.FrameReader(data_r), protocol.FrameReader(ctl_r)
        os.write(data_w, protocol.encode_frame({"v": 1}) + protocol.encode_frame({"v": 2}))
        assert reader.read(time.monotonic() + 5, interrupt=control) == {"v": 1}
        os.write(ctl_w, protocol.encode_frame({"op": "stop"}))
        os.write(data_w, protocol.encode_frame({"v": 3}))
        # a complete frame already read comes first; then the interrupt wins over unread input
        assert reader.read(time.monotonic() + 5, interrupt=control) == {"v": 2}
        with pytest.raises(protocol.Interrupted):
            reader.read(time.monotonic() + 5, interrupt=control)
        assert control.read() == {"op": "stop"}
        assert reader.read(time.monotonic() + 5) == {"v": 3}
    finally:
        for fd in (data_r, data_w, ctl_r, ctl_w):
            os.close(fd)
