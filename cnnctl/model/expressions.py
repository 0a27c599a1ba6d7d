"""Safe arithmetic in block templates: `${in_channels * expansion}`, evaluated on Python's parsed
syntax tree with a short list of allowed operations (never `eval`)."""

from __future__ import annotations

import ast
import math
import operator
from typing import Any

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
            ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_MAX_POWER = 64  # 2 ** 10**9 would take the process down before any layer is built


class ExpressionError(ValueError):
    """An expression that cannot be parsed or evaluated; the message says why."""


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """The channel rounding of MobileNet and EfficientNet: the nearest multiple of `divisor`
    (at least `min_value`, default `divisor`), one `divisor` more where rounding would lose
    over 10%."""
    if divisor <= 0:
        raise ExpressionError(f"make_divisible needs a divisor > 0 (got {divisor!r})")
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


FUNCTIONS = {"min": min, "max": max, "abs": abs, "round": round, "int": int, "float": float,
             "floor": math.floor, "ceil": math.ceil, "make_divisible": make_divisible}


def evaluate(text: str, names: dict[str, Any]) -> Any:
    """The value of the expression `text` with `names` bound.

    Raises:
        ExpressionError: a syntax error, an unknown name, a disallowed construct, or an
            arithmetic error (division by zero, ...), in words.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ExpressionError(f"cannot parse ${{{text}}}: {e.msg}") from None
    try:
        return _Evaluator(names).visit(tree.body)
    except ExpressionError as e:
        raise ExpressionError(f"${{{text}}}: {e}") from None
    except (ArithmeticError, TypeError, ValueError) as e:
        raise ExpressionError(f"${{{text}}}: {e}") from None


def names_in(text: str) -> list[str]:
    """The names an expression uses (not its functions), in order.

    Raises:
        ExpressionError: the text is not an expression.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ExpressionError(f"cannot parse ${{{text}}}: {e.msg}") from None
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    names = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in called
             and n.id not in _BOOLEANS]
    return list(dict.fromkeys(names))


_BOOLEANS = {"true": True, "True": True, "false": False, "False": False}


class _Evaluator(ast.NodeVisitor):
    def __init__(self, names: dict[str, Any]):
        self.names = names

    def generic_visit(self, node):
        raise ExpressionError(f"{type(node).__name__.lower()} is not allowed in an expression "
                              "(numbers, names, + - * / // % **, comparisons, and/or/not, "
                              f"`a if c else b` and {', '.join(FUNCTIONS)} are)")

    def visit_Constant(self, node):
        if isinstance(node.value, (int, float, str, bool)) or node.value is None:
            return node.value
        return self.generic_visit(node)

    def visit_Name(self, node):
        if node.id in self.names:
            value = self.names[node.id]
            if value is None and node.id.startswith("in_"):
                raise ExpressionError(f"{node.id} is not known here (the input's size is None)")
            return value
        if node.id in _BOOLEANS:
            return _BOOLEANS[node.id]
        from cnnctl.config import wording  # words did-you-mean; imported late (no cycle)

        raise ExpressionError(f"unknown name {node.id!r}{wording.did_you_mean(node.id, self.names)}"
                              f"; known: {', '.join(self.names)}")

    def visit_List(self, node):
        return [self.visit(e) for e in node.elts]

    visit_Tuple = visit_List

    def visit_BinOp(self, node):
        op = _BINARY.get(type(node.op))
        if op is None:
            return self.generic_visit(node)
        left, right = self.visit(node.left), self.visit(node.right)
        if op is operator.pow and isinstance(right, (int, float)) and abs(right) > _MAX_POWER:
            raise ExpressionError(f"exponent {right!r} is too large (at most {_MAX_POWER})")
        if isinstance(left, str) or isinstance(right, str):
            raise ExpressionError(f"cannot do arithmetic on text ({left!r}, {right!r})")
        return op(left, right)

    def visit_UnaryOp(self, node):
        op = _UNARY.get(type(node.op))
        if op is None:
            return self.generic_visit(node)
        return op(self.visit(node.operand))

    def visit_BoolOp(self, node):
        if isinstance(node.op, ast.And):
            return all(self.visit(v) for v in node.values)
        return any(self.visit(v) for v in node.values)

    def visit_Compare(self, node):
        left = self.visit(node.left)
        for op, comparator in zip(node.ops, node.comparators):
            fn = _COMPARE.get(type(op))
            if fn is None:
                return self.generic_visit(op)
            right = self.visit(comparator)
            if not fn(left, right):
                return False
            left = right
        return True

    def visit_IfExp(self, node):
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def visit_Call(self, node):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else "this call"
            raise ExpressionError(f"unknown function {name!r}; known: {', '.join(FUNCTIONS)}")
        args = [self.visit(a) for a in node.args]
        kwargs = {k.arg: self.visit(k.value) for k in node.keywords if k.arg}
        return FUNCTIONS[node.func.id](*args, **kwargs)
