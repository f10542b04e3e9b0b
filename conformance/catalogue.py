"""The requirement catalogue (``requirements.toml``): loading and validation.

The catalogue is the single source of truth: a test names the requirement it checks with
``@pytest.mark.requirement("SIG-003")``, the report is keyed by requirement id, and
``docs/conformance.md`` has one row per requirement.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CATALOGUE_PATH = Path(__file__).with_name("requirements.toml")
LEVELS: tuple[str, ...] = ("MUST", "SHOULD", "MAY")
ID_PATTERN = re.compile(r"^(?P<area>[A-Z]+)-(?P<number>\d{3})$")
#: Requirement-id prefix of each section.
PREFIXES: dict[str, str] = {
    "component-api": "API",
    "signalling": "SIG",
    "audio": "AUD",
    "video": "VID",
    "handlers": "HND",
    "reply-on-pause": "ROP",
    "additional-outputs": "OUT",
    "limits": "LIM",
    "lifecycle": "LIFE",
    "errors": "ERR",
}


class CatalogueError(ValueError):
    """The catalogue file is malformed (duplicate id, unknown level, missing field...)."""


@dataclass(frozen=True)
class Requirement:
    """One numbered, testable statement."""

    id: str
    section: str
    level: str
    statement: str
    source: str
    guide: str | None = None
    rationale: str | None = None
    note: str | None = None
    #: Why the ``null`` adapter (which implements nothing) passes it; only for SHOULD/MAY.
    null_passes: str | None = None

    @property
    def sort_key(self) -> tuple[int, int]:
        match = ID_PATTERN.match(self.id)
        assert match is not None
        order = list(PREFIXES.values())
        return order.index(match["area"]), int(match["number"])


@dataclass(frozen=True)
class Catalogue:
    """All requirements, in catalogue order, and the section titles."""

    sections: dict[str, str]
    requirements: tuple[Requirement, ...]

    def __getitem__(self, requirement_id: str) -> Requirement:
        for requirement in self.requirements:
            if requirement.id == requirement_id:
                return requirement
        raise KeyError(f"no requirement {requirement_id!r} in {CATALOGUE_PATH.name}")

    def __contains__(self, requirement_id: object) -> bool:
        return any(r.id == requirement_id for r in self.requirements)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.requirements)

    def __len__(self) -> int:
        return len(self.requirements)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.requirements]

    def count_by_level(self) -> dict[str, int]:
        return {level: sum(r.level == level for r in self.requirements) for level in LEVELS}


_FIELDS = {
    "id",
    "section",
    "level",
    "statement",
    "source",
    "guide",
    "rationale",
    "note",
    "null_passes",
}
_REQUIRED = ("id", "section", "level", "statement", "source")


def parse(text: str) -> Catalogue:
    """Parse and validate catalogue TOML; raise :class:`CatalogueError` naming the problem."""
    data = tomllib.loads(text)
    sections = data.get("sections")
    if not isinstance(sections, dict) or set(sections) != set(PREFIXES):
        raise CatalogueError(
            f"[sections] must name exactly {sorted(PREFIXES)}; got {sorted(sections or {})}"
        )
    entries = data.get("requirement")
    if not isinstance(entries, list) or not entries:
        raise CatalogueError("the catalogue has no [[requirement]] entries")
    seen: set[str] = set()
    requirements: list[Requirement] = []
    for index, entry in enumerate(entries):
        where = f"requirement #{index + 1} ({entry.get('id', '?')})"
        unknown = set(entry) - _FIELDS
        if unknown:
            raise CatalogueError(f"{where}: unknown fields {sorted(unknown)}")
        for name in _REQUIRED:
            if not isinstance(entry.get(name), str) or not entry[name].strip():
                raise CatalogueError(f"{where}: {name!r} must be a non-empty string")
        match = ID_PATTERN.match(entry["id"])
        if match is None:
            raise CatalogueError(f"{where}: id must look like AREA-NNN")
        if entry["id"] in seen:
            raise CatalogueError(f"{where}: duplicate id {entry['id']}")
        seen.add(entry["id"])
        if entry["section"] not in PREFIXES:
            raise CatalogueError(f"{where}: unknown section {entry['section']!r}")
        if PREFIXES[entry["section"]] != match["area"]:
            raise CatalogueError(
                f"{where}: ids of section {entry['section']!r} start with "
                f"{PREFIXES[entry['section']]}-"
            )
        if entry["level"] not in LEVELS:
            raise CatalogueError(f"{where}: level must be one of {LEVELS}")
        if entry["level"] != "MUST" and "guide" not in entry and "rationale" not in entry:
            raise CatalogueError(
                f"{where}: a {entry['level']} that the guide does not state needs a rationale"
            )
        if "null_passes" in entry and entry["level"] == "MUST":
            raise CatalogueError(
                f"{where}: a MUST cannot pass on an implementation that does nothing "
                "(null_passes); make its test observe what the implementation does"
            )
        requirements.append(Requirement(**entry))
    return Catalogue(sections=dict(sections), requirements=tuple(requirements))


@cache
def load(path: Path = CATALOGUE_PATH) -> Catalogue:
    """The catalogue at ``path`` (default: the suite's ``requirements.toml``)."""
    return parse(path.read_text(encoding="utf-8"))
