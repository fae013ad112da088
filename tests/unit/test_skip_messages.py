"""Every skip in tests/ names what is missing and the command that provides it.

The sources are read, not run: each ``pytest.skip(...)``, ``pytest.importorskip(...)``,
``pytest.mark.skipif(...)`` and call of a module's skip wrapper (``_unavailable``) must carry
a message, and its literal text (an f-string's fixed parts; a helper of :mod:`tests.needs` or
:mod:`tests.shared_data` whose output is checked below) must contain a command.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests import needs
from tests.shared_data import REPLAY_DATA, absent_reason

TESTS = Path(__file__).resolve().parents[1]
#: what counts as saying how to get the missing piece
HOW = re.compile(r"pip install|npm install|apt-get install|\.ci/run|put \.\./shared|unset CODEX_BIN|`sudo ")
#: helpers whose messages are built elsewhere and checked here by calling them
HELPERS = {"postgres", "redis", "postgres_or_redis", "package", "absent_reason"}
WRAPPERS = {"_unavailable"}  # its argument is the message, checked at its call sites


def _message(call: ast.Call, name: str) -> ast.AST | None:
    keyword = next((k.value for k in call.keywords if k.arg in ("reason", "msg")), None)
    if name == "importorskip":
        return keyword  # its first argument is the module, not the message
    if name == "skipif":
        return keyword
    return call.args[0] if call.args else keyword


def _text(node: ast.AST, constants: dict[str, str]) -> str | None:
    """The fixed text of a message (module-level string constants filled in), or None when a checked helper makes it."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name):
                parts.append(constants.get(value.value.id, ""))
        return "".join(parts)
    if isinstance(node, ast.BinOp):
        parts = [_text(node.left, constants), _text(node.right, constants)]
        return None if None in parts else "".join(parts)  # type: ignore[arg-type]
    if isinstance(node, ast.Call):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if called in HELPERS:
            return None
    return "<not a literal message: use tests.needs or a string literal>"


def skips() -> list[tuple[str, int, str, ast.AST | None, str | None, dict[str, str]]]:
    """(file, line, the call's name, its message, the enclosing function, the module's string constants) per skip."""
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        constants = {target.id: stmt.value.value for stmt in tree.body if isinstance(stmt, ast.Assign)
                     and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)
                     for target in stmt.targets if isinstance(target, ast.Name)}

        def visit(node: ast.AST, enclosing: str | None, path: Path = path, constants: dict[str, str] = constants) -> None:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                enclosing = node.name
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in ("skip", "importorskip", "skipif", "_unavailable"):
                    found.append((str(path.relative_to(TESTS)), node.lineno, name, _message(node, name), enclosing,
                                  constants))
            for child in ast.iter_child_nodes(node):
                visit(child, enclosing)

        visit(tree, None)
    return found


def test_the_scan_finds_the_skips():
    names = {name for _, _, name, _, _, _ in skips()}
    assert {"skip", "importorskip", "skipif"} <= names


def test_every_skip_says_what_is_missing_and_how_to_get_it():
    bad = []
    for where, line, name, message, enclosing, constants in skips():
        if message is None:
            bad.append(f"{where}:{line}: {name} without a message")
            continue
        if isinstance(message, ast.Name) and enclosing in WRAPPERS:
            continue  # the wrapper passes its caller's message on; the call sites are checked
        text = _text(message, constants)
        if text is not None and not HOW.search(text):
            bad.append(f"{where}:{line}: {text!r}")
    assert not bad, "skips that do not name a command to get what is missing:\n" + "\n".join(bad)


@pytest.mark.parametrize("message", [
    needs.postgres("postgresql://x", "refused"), needs.redis("redis://x", "CASCADEFLOW_TEST_REDIS"),
    needs.package("litellm"), absent_reason(REPLAY_DATA / "x.calib.jsonl"),
    needs.postgres_or_redis("postgresql://x", "redis://y", "CASCADEFLOW_TEST_REDIS", "refused"),
])
def test_the_shared_messages_name_a_command(message):
    assert HOW.search(message), message
