"""A safe arithmetic evaluator on Python's `ast` (never `eval`): numbers, + - * / // % ** and parentheses."""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 64
MAX_MAGNITUDE = 1e100

# A run of arithmetic characters that contains a digit, an operator and ends in a digit or ')'.
_EXPRESSION_RE = re.compile(r"[\d(.][\d\s.+\-*/%()]*[\d)]")


class CalculatorError(ValueError):
    pass


def evaluate(expression: str) -> int | float:
    """Evaluate arithmetic; raise CalculatorError for anything else (names, calls, huge powers, division by 0)."""
    text = expression.strip().replace("^", "**")
    if not text or len(text) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression must be 1..{MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculatorError(f"not an arithmetic expression: {expression!r}") from None
    result = _eval(tree.body)
    if isinstance(result, float) and result.is_integer() and abs(result) < 2**53:
        return int(result)
    return result


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {right} is too large (max {MAX_EXPONENT})")
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
        except OverflowError:
            raise CalculatorError("result is too large") from None
        if isinstance(result, complex) or abs(result) > MAX_MAGNITUDE:
            raise CalculatorError("result is out of range")
        return result
    raise CalculatorError(f"unsupported expression element: {type(node).__name__}")


def find_expression(text: str) -> str | None:
    """The longest arithmetic expression in free text ("what is 2 + 3 * 4?" -> "2 + 3 * 4"), if any."""
    candidates = [m.group(0).strip() for m in _EXPRESSION_RE.finditer(text)]
    candidates = [c for c in candidates if re.search(r"\d\s*[-+*/%]", c) or re.search(r"\)\s*[-+*/%]", c)]
    return max(candidates, key=len) if candidates else None
