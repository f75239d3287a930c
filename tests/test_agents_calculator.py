"""The calculator tool's evaluator: arithmetic only, on the AST, never `eval`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runcast.worker.calculator import CalculatorError, evaluate, find_expression


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-3 ** 2", -9),
        ("2 ^ 10", 1024),
        ("10 % 4", 2),
        ("1.5 * 2", 3),
        ("+4", 4),
    ],
)
def test_arithmetic_is_evaluated(expression: str, value: float):
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "x + 1",
        "abs(-1)",
        "1 if 1 else 2",
        "[1, 2]",
        "'a' * 3",
        "2 ** 10000",
        "9 ** 9 ** 9",
        "1 / 0",
        "",
        "1 +",
        "(" * 150 + "1" + ")" * 150,
        "True + 1",
    ],
)
def test_anything_else_is_refused_with_a_calculator_error(expression: str):
    with pytest.raises(CalculatorError):
        evaluate(expression)


@given(st.integers(-(10**6), 10**6), st.sampled_from("+-*"), st.integers(-(10**6), 10**6))
def test_integer_arithmetic_matches_python(a: int, op: str, b: int):
    expected = {"+": a + b, "-": a - b, "*": a * b}[op]
    assert evaluate(f"{a} {op} ({b})") == expected


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("What is 2 + 3 * 4?", "2 + 3 * 4"),
        ("please compute (7 - 2) * 3", "(7 - 2) * 3"),
        ("hello 42", None),
        ("no numbers", None),
        ("in 2024 we had 3 * 5 apples", "3 * 5"),
    ],
)
def test_the_expression_is_found_in_free_text(text: str, expression: str | None):
    assert find_expression(text) == expression
