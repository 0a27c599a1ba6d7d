"""cnnctl.model.expressions: safe arithmetic of block templates, and what it refuses."""

import pytest

from cnnctl.model.expressions import ExpressionError, evaluate, make_divisible, names_in


@pytest.mark.parametrize("text, value", [
    ("in_channels * 6", 96),
    ("max(1, int(in_channels * 0.25))", 4),
    ("in_channels // 2", 8),
    ("4 * dim", 384),
    ("blocks - 2", 4),
    ("2 if copy == 0 else 1", 2),
    ("0.2 * block_index / block_count", pytest.approx(0.05)),
    ("stride != 1 or in_channels != dim", True),
    ("not (stride == 1 and in_channels == dim)", True),
    ("-in_channels % 5", 4),
    ("2 ** 3", 8),
    ("ceil(in_channels / 3)", 6),
    ("floor(2.7) + round(2.5) + abs(-1)", 5),
    ("[1, 1, in_channels]", [1, 1, 16]),
    ("make_divisible(in_channels * 4.5)", 72),
    ("true and not false", True),
])
def test_expressions_compute(text, value):
    names = {"in_channels": 16, "dim": 96, "blocks": 6, "copy": 0, "block_index": 1,
             "block_count": 4, "stride": 2}
    assert evaluate(text, names) == value


def test_make_divisible_is_the_mobilenet_rule():
    # keras.applications' own rounding (mobilenet_v3._depth, efficientnet round_filters), written
    # out here so that the test does not reach into Keras's private functions
    def keras_rule(v, divisor=8, min_value=None):
        min_value = min_value or divisor
        new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
        return new_v + divisor if new_v < 0.9 * v else new_v

    for v in [1, 3, 4, 7.5, 12, 16 * 0.25, 88, 72.0 / 16 * 16, 96 * 6 * 0.25, 1000, 243.2]:
        for divisor in (1, 4, 8, 16):
            assert make_divisible(v, divisor) == keras_rule(v, divisor), (v, divisor)
    assert make_divisible(3, 8, min_value=4) == 4


@pytest.mark.parametrize("text, message", [
    ("in_chanels * 2", "${in_chanels * 2}: unknown name 'in_chanels' (did you mean 'in_channels'?); "
                       "known: in_channels"),
    ("in_channels *", "cannot parse ${in_channels *}: invalid syntax"),
    ("in_channels / 0", "${in_channels / 0}: division by zero"),
    ("__import__('os')", "${__import__('os')}: unknown function '__import__'; known: min, max, abs, "
                         "round, int, float, floor, ceil, make_divisible"),
    ("in_channels.bit_length()", "${in_channels.bit_length()}: unknown function 'this call'; known: "
                                 "min, max, abs, round, int, float, floor, ceil, make_divisible"),
    ("(1).__class__", "${(1).__class__}: attribute is not allowed in an expression (numbers, names, "
                      "+ - * / // % **, comparisons, and/or/not, `a if c else b` and min, max, abs, "
                      "round, int, float, floor, ceil, make_divisible are)"),
    ("2 ** 100000", "${2 ** 100000}: exponent 100000 is too large (at most 64)"),
    ("[x for x in [1]]", "${[x for x in [1]]}: listcomp is not allowed in an expression (numbers, "
                         "names, + - * / // % **, comparisons, and/or/not, `a if c else b` and "
                         "min, max, abs, round, int, float, floor, ceil, make_divisible are)"),
    ("lambda: 1", "${lambda: 1}: lambda is not allowed in an expression (numbers, names, + - * / "
                  "// % **, comparisons, and/or/not, `a if c else b` and min, max, abs, round, "
                  "int, float, floor, ceil, make_divisible are)"),
    ("'a' * 10", "${'a' * 10}: cannot do arithmetic on text ('a', 10)"),
])
def test_bad_expressions_say_why(text, message):
    with pytest.raises(ExpressionError) as e:
        evaluate(text, {"in_channels": 16})
    assert str(e.value) == message


def test_names_in_lists_the_names_but_not_the_functions():
    assert sorted(names_in("max(1, in_channels // reduction) if use_se else true")) == [
        "in_channels", "reduction", "use_se"]
