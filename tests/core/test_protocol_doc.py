"""docs/protocol.md and the protocol package (chat/protocol/) name the same things.

Every frame type, error code (with its HTTP status), close code and version the code has
is in the doc's tables, and the doc's tables name nothing the code lacks. The expected
sets come from the package's own tables, so adding a frame, code or close without its
line in the doc (or leaving a stale line behind) fails here. The source checks below
keep those tables the only place such things are made.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from chat.protocol import closes, frames, inbound, versions
from chat.protocol.errors import CODES

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
APP = ROOT / "app"
PACKAGE = APP / "chat" / "protocol"


def section(heading: str) -> str:
    """The text under a heading (any level), up to the next heading of any level."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"^#+ {re.escape(heading)}\s*$", text, re.MULTILINE)
    assert match, f"docs/protocol.md has no heading {heading!r}"
    rest = text[match.end() :]
    end = re.search(r"^#+ ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def table(heading: str, header: str) -> list[list[str]]:
    """The rows (cells stripped) of the table in `heading`'s section whose first header
    cell is `header`."""
    rows: list[list[str]] = []
    found = False
    for line in section(heading).splitlines():
        if not line.startswith("|"):
            if found and rows:
                break
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if not found:
            found = cells[0] == header
            continue
        if set(cells[0]) <= {"-", ":"}:  # the separator row
            continue
        rows.append(cells)
    assert rows, f"no table headed {header!r} under {heading!r}"
    return rows


def backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_doc_names_every_frame_the_server_sends():
    named = [name for row in table("Server → client", "frame") for name in backticked(row[0])]
    assert len(named) == len(set(named)), "a frame type listed twice"
    assert set(named) == frames.TYPES


def test_doc_names_every_frame_a_client_sends():
    rows = table("Client → server", "frame")
    named = {m for row in rows for m in re.findall(r'\{"type":"(\w+)"', row[0])}
    assert named == inbound.TYPES


def test_every_type_in_the_doc_is_a_frame_type():
    """Examples and prose too: a `"type": "…"` anywhere is a type one side sends."""
    text = DOC.read_text(encoding="utf-8")
    mentioned = set(re.findall(r'"type"\s*:\s*"(\w+)"', text))
    assert mentioned - (frames.TYPES | inbound.TYPES) == set()


def test_doc_names_every_error_code_with_its_status():
    rows = table("Errors", "code")
    documented = {backticked(row[0])[0]: int(row[1]) for row in rows}
    assert len(documented) == len(rows), "an error code listed twice"
    assert documented == {code: entry.status for code, entry in CODES.items()}


def test_doc_names_every_close_code():
    rows = table("Close codes", "close code")
    documented = {int(row[0]) for row in rows}
    assert documented == set(closes.CLOSES)
    # The error frame sent before each refusal's close (the cell's first code) is the one
    # the table maps to that close.
    sent_first = {error for row in rows for error in backticked(row[2])[:1]}
    for row in rows:
        for error in backticked(row[2])[:1]:
            assert error in CODES, f"close {row[0]} names an unknown error {error!r}"
            assert closes.for_refusal(error) == int(row[0]), (error, row[0])
    assert {e for close in closes.CLOSES.values() for e in close.errors} <= sent_first


def test_doc_names_every_version():
    rows = table("Versions", "version")
    assert {int(backticked(row[0])[0]) for row in rows} == set(versions.VERSIONS)


# --- The package is the only place frames and close codes come from -----------------------


def _sources():
    for path in sorted(APP.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _type_constants(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "type"
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                ):
                    yield node.lineno, value.value


def test_frames_are_built_in_frames_py_only():
    """A dict with a literal "type" outside frames.py is an ASGI message, never a frame."""
    for path, tree in _sources():
        if path == PACKAGE / "frames.py":
            continue
        for line, kind in _type_constants(tree):
            assert kind.startswith("websocket."), f"{path}:{line} builds a {kind!r} frame"


def test_each_builder_makes_the_type_it_is_registered_for():
    """And frames.py builds no frame outside a registered builder."""
    tree = ast.parse((PACKAGE / "frames.py").read_text(encoding="utf-8"))
    checked = set()
    in_builders: set[tuple[int, str]] = set()
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "_builds":
                kind = decorator.args[0].value
                made = set(_type_constants(node))
                assert {k for _, k in made} == {kind}, node.name
                in_builders |= made
                assert frames.BUILDERS[kind].__name__ == node.name
                checked.add(kind)
    assert checked == frames.TYPES
    assert set(_type_constants(tree)) == in_builders


def _close_literals(tree: ast.AST):
    """Integer literals where a close code goes: close(…), code=…, {"code": …}."""
    for node in ast.walk(tree):
        candidates: list[ast.AST] = []
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in {"close", "serverClose", "sendClose"} and node.args:
                candidates.append(node.args[0])
            candidates += [k.value for k in node.keywords if k.arg == "code"]
        elif isinstance(node, ast.Dict):
            candidates += [
                v
                for k, v in zip(node.keys, node.values, strict=True)
                if isinstance(k, ast.Constant) and k.value == "code"
            ]
        for value in candidates:
            if isinstance(value, ast.Constant) and isinstance(value.value, int):
                yield node.lineno, value.value


def test_close_codes_come_from_closes_py():
    for path, tree in _sources():
        for line, code in _close_literals(tree):
            pytest.fail(f"{path}:{line} closes with a literal {code}; use chat.protocol.closes")
