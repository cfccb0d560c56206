"""Argument types JSON could not hold: tuples, sets and complex numbers in MBPP+ inputs.

MbppPlus.jsonl stores every tuple and set as a list and complex numbers as strings, so some
references fail on the raw inputs (Mbpp/106 concatenates a list to a tuple). EvalPlus rebuilds
the types per task when it loads the file; this table states the same per-task rules (after
``mbpp_deserialize_inputs`` in evalplus 0.3.1, Apache-2.0) as data: task number -> how one
argument list is rebuilt.
"""
from __future__ import annotations

from collections.abc import Callable

Args = list


def _deep_tuple(value):
    return tuple(_deep_tuple(v) for v in value) if isinstance(value, list) else value


def _each_arg_tuple(args: Args) -> Args:
    return [tuple(a) for a in args]


def _each_arg_items_tuple(args: Args) -> Args:
    return [[tuple(x) for x in a] for a in args]


def _first_arg_items_tuple(args: Args) -> Args:
    return [[tuple(x) for x in args[0]], *args[1:]]


def _first_arg_tuple(args: Args) -> Args:
    return [tuple(args[0]), *args[1:]]


def _second_arg_tuple(args: Args) -> Args:
    return [args[0], tuple(args[1]), *args[2:]]


def _each_arg_tuple_of_tuples(args: Args) -> Args:
    return [tuple(tuple(x) for x in a) for a in args]


def _first_arg_mixed_tuple(args: Args) -> Args:
    return [tuple(tuple(x) if isinstance(x, list) else x for x in args[0])]


def _first_arg_dict_values_tuple(args: Args) -> Args:
    return [{k: tuple(v) for k, v in args[0].items()}, *args[1:]]


def _first_arg_items_set(args: Args) -> Args:
    # EvalPlus writes an empty item as {} (a dict), and the reference relies on it
    return [[set(x) if isinstance(x, list) and x else {} for x in args[0]]]


def _float_complex(args: Args) -> Args:
    return [float(args[0]), complex(args[1])]


def _complex(args: Args) -> Args:
    return [complex(args[0])]


def _all_tuples(args: Args) -> Args:
    return list(_deep_tuple(args))


_GROUPS: list[tuple[Callable[[Args], Args], tuple[int, ...]]] = [
    (_each_arg_tuple, (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579,
                       596, 616, 630, 726, 740, 744, 809)),
    (_each_arg_items_tuple, (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614,
                             780)),
    (_first_arg_items_tuple, (75, 413, 444, 753)),
    (_second_arg_tuple, (106, 750)),
    (_first_arg_items_set, (115,)),
    (_float_complex, (124,)),
    (_first_arg_tuple, (250, 307, 405, 446, 617, 720, 763, 808)),
    (_each_arg_tuple_of_tuples, (259, 401, 445)),
    (_first_arg_mixed_tuple, (278,)),
    (_first_arg_dict_values_tuple, (722,)),
    (_complex, (252,)),
    (_all_tuples, (580, 615, 791)),
]
RULES: dict[int, Callable[[Args], Args]] = {n: rule for rule, numbers in _GROUPS for n in numbers}


def typed_inputs(task_number: int, inputs: list[Args]) -> list[Args]:
    """``inputs`` (argument lists of one suite) with the task's tuples/sets/complex rebuilt."""
    rule = RULES.get(task_number)
    return [rule(args) for args in inputs] if rule else inputs
