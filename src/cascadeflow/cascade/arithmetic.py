"""Does a draft's working contain an arithmetic error? A signal for math answers that needs no model.

A worked answer states equations ("3 x 60 = 180", GSM8K's "<<3*60=180>>"); when one of them is false, the
answer built on it is usually wrong (RouteLLM's Mixtral gsm8k drafts: 15% correct with a false equation,
65% without). Only whole equations are checked: numbers and + - * / x × ÷ (and LaTeX's \\times, \\cdot,
\\div) with parentheses on the left, one number on the right, nothing arithmetic just before or after (so a
chain "a = b * c = d" or a term of a longer expression is skipped, never misread). A result may be rounded
to the decimals it states. Cost: at most 32 "=" looked at, each with a regex over the 80 characters
before it and ``ast.parse`` of an equation found; nothing when the answer holds no "=".
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable

__all__ = ["false_equations"]

_NUM = r"-?\$?\d[\d,]*+(?:\.\d+)?+"
#: a left-hand side, ending where the "=" is (possessive quantifiers: no backtracking on long digit runs)
_LHS = re.compile(rf"(?:(?:\(\s*)?{_NUM}\s*\)?\s*[-+*/x×÷]\s*)++(?:\(\s*)?{_NUM}\s*\)?\s*$")
_RHS = re.compile(r"\s*\$?(-?\d[\d,]*+(?:\.\d+)?+)")
#: the longest left-hand side read, and the most "=" looked at: a bounded cost on any answer
_SPAN = 80
_MAX_EQUALS = 32
#: what may follow a result that is not the end of an equation: another operator, more digits, a unit glued on
_CONTINUES = re.compile(r"\s*[-+*/x×÷^(]\s*[\d(]|[.,]?\d|%|[A-Za-z]")
#: what may precede (spaces apart) a left-hand side that is only the tail of a longer expression; a letter or
#: digit glued to it (``x3``) also marks one
_JOINED = frozenset("._)(*/+-×÷^%")
_OPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}  # fmt: skip
_LATEX = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("\\*", "*"))


def _value(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_value(node.left), _value(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    raise ValueError("not arithmetic")


def _holds(lhs: str, rhs: str) -> bool | None:
    """Whether ``lhs = rhs`` is true (within the precision ``rhs`` states); None when ``lhs`` is not checkable."""
    expression = lhs.replace(",", "").replace("$", "").replace("x", "*").replace("×", "*").replace("÷", "/")
    try:
        value = _value(ast.parse(expression.strip(), mode="eval").body)
    except (ValueError, SyntaxError, ZeroDivisionError, RecursionError, OverflowError):
        return None
    stated = float(rhs.replace(",", ""))
    decimals = len(rhs.split(".", 1)[1]) if "." in rhs else 0
    if decimals == 0 and value == int(value):
        return value == stated
    return abs(value - stated) <= 0.5 * 10.0**-decimals + 1e-9 * abs(value)  # a rounded result is not an error


def false_equations(answer: str) -> tuple[int, int]:
    """(whole equations checked, how many of them are false) in ``answer``."""
    if "=" not in answer:
        return 0, 0
    if "\\" in answer:
        for latex, plain in _LATEX:
            answer = answer.replace(latex, plain)
    checked = false = 0
    at = answer.find("=")
    for _ in range(_MAX_EQUALS):
        if at < 0:
            break
        here, at = at, answer.find("=", at + 1)
        window = answer[max(0, here - _SPAN) : here]
        lhs = _LHS.search(window)
        rhs = _RHS.match(answer, here + 1)
        if lhs is None or rhs is None or (lhs.start() == 0 and here > _SPAN):
            continue  # no arithmetic on one side, or a left side longer than the window
        glued = window[lhs.start() - 1 : lhs.start()]
        before = window[max(0, lhs.start() - 16) : lhs.start()].rstrip()[-1:]
        if _CONTINUES.match(answer, rhs.end()) or glued.isalnum() or (before and before in _JOINED):
            continue  # a chain "a = b * c = d" (judged at its next "="), or the tail of a longer expression
        match = (lhs.group(0).strip(), rhs.group(1))
        holds = _holds(*match)
        if holds is not None:
            checked += 1
            false += not holds
    return checked, false
