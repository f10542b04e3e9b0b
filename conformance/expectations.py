"""Expectation files: known failures of an implementation, with the reason.

``conformance/expectations/<impl>.toml`` (or ``--expectations PATH``)::

    [[xfail]]
    id = "VID-003"                       # the requirement
    reason = "hands BGR frames to fn"    # why (shown in the report)
    test = "test_frame_is_rgb"           # optional: only tests whose name contains this
    strict = false                       # optional: a timing-dependent failure that may pass

Matching tests are marked ``xfail``: the requirement is reported XFAIL with the reason.
If every matching test passes, the expectation is stale: the requirement is reported FAIL
and the run fails (remove the entry). With ``strict = false`` (only for failures that
depend on timing) such a pass is reported PASS. A parametrised test may fail for some
parameters only; the requirement is then XFAIL.
An entry whose id is not in the catalogue, or that matches no test of the suite, is an
error: the run stops. webrtc_ref's file lists only its deliberate departures from the
fastrtc profile.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from conformance.catalogue import Catalogue

EXPECTATIONS_DIR = Path(__file__).with_name("expectations")
TESTS_DIR = Path(__file__).with_name("tests")


class ExpectationError(ValueError):
    """An expectation file is malformed or has an entry that matches no test."""


@dataclass(frozen=True)
class Expectation:
    id: str
    reason: str
    test: str | None = None
    strict: bool = True

    def matches(self, requirement_id: str, test_name: str) -> bool:
        return requirement_id == self.id and (self.test is None or self.test in test_name)


def default_path(impl: str) -> Path:
    return EXPECTATIONS_DIR / f"{impl}.toml"


def test_index(tests_dir: Path = TESTS_DIR) -> dict[str, list[str]]:
    """Requirement id -> names of the test functions marked with it, read from the sources.

    Read statically (``ast``), so it covers the whole suite whatever subset is collected.
    """
    index: dict[str, list[str]] = {}
    for path in sorted(tests_dir.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Call)
                    and isinstance(decorator.func, ast.Attribute)
                    and decorator.func.attr == "requirement"
                    and decorator.args
                    and isinstance(decorator.args[0], ast.Constant)
                    and isinstance(decorator.args[0].value, str)
                ):
                    index.setdefault(decorator.args[0].value, []).append(node.name)
    return index


def load(path: Path, catalogue: Catalogue, index: dict[str, list[str]]) -> list[Expectation]:
    """Parse and check ``path``; raise :class:`ExpectationError` naming the bad entry."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ExpectationError(f"{path}: cannot read: {exc}") from exc
    unknown_tables = set(data) - {"xfail"}
    if unknown_tables:
        raise ExpectationError(f"{path}: unknown tables {sorted(unknown_tables)}; use [[xfail]]")
    entries: list[Expectation] = []
    for number, entry in enumerate(data.get("xfail", []), start=1):
        where = f"{path.name}: entry #{number} ({entry.get('id', '?')})"
        unknown = set(entry) - {"id", "reason", "test", "strict"}
        if unknown:
            raise ExpectationError(f"{where}: unknown fields {sorted(unknown)}")
        if not isinstance(entry.get("strict", True), bool):
            raise ExpectationError(f"{where}: 'strict' must be true or false")
        if not isinstance(entry.get("id"), str) or not isinstance(entry.get("reason"), str):
            raise ExpectationError(f"{where}: 'id' and 'reason' must be strings")
        if not entry["reason"].strip():
            raise ExpectationError(f"{where}: 'reason' must say why")
        expectation = Expectation(
            entry["id"], entry["reason"].strip(), entry.get("test"), entry.get("strict", True)
        )
        if expectation.id not in catalogue:
            raise ExpectationError(f"{where}: {expectation.id} is not in the catalogue")
        tests = index.get(expectation.id, [])
        if not any(expectation.matches(expectation.id, name) for name in tests):
            what = f"test matching {expectation.test!r}" if expectation.test else "test"
            raise ExpectationError(
                f"{where}: matches no {what} of {expectation.id} (tests: {tests or 'none'})"
            )
        entries.append(expectation)
    return entries
