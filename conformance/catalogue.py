"""The requirement catalogue: loading and validation.

The catalogue is the single source of truth: a test names the requirement it checks with
``@pytest.mark.requirement("SIG-003")``, the report is keyed by requirement id, and
``docs/conformance.md`` has one row per requirement.

It has one file per **profile** (:data:`PROFILES`): ``requirements.toml`` (``guide``: the
user guide and the wire protocol) and ``requirements_fastrtc.toml`` (``fastrtc``: fastrtc
0.0.34's handler API, from its documentation). Each profile has sections of its own, and
each section its own id prefix, so ids never collide; :func:`load` returns all profiles as
one catalogue, each requirement knowing its profile.
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
FASTRTC_CATALOGUE_PATH = Path(__file__).with_name("requirements_fastrtc.toml")
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
#: Requirement-id prefix of each section of the fastrtc profile.
FASTRTC_PREFIXES: dict[str, str] = {
    "fastrtc-api": "FAPI",
    "fastrtc-handlers": "FHND",
    "fastrtc-reply-on-pause": "FROP",
    "fastrtc-control": "FMSG",
    "fastrtc-video": "FVID",
    "fastrtc-audio-video": "FAV",
    "fastrtc-utils": "FUTL",
    "fastrtc-ice": "FICE",
    "fastrtc-stream": "FSTR",
}
#: One citation of the fastrtc profile: a page of fastrtc 0.0.34's documentation (as kept
#: in the reference copy, e.g. ``fastrtc reference/stream_handlers.md §AsyncStreamHandler``)
#: or, where the documentation is silent, a module of its package
#: (``fastrtc fastrtc/utils.py §audio_to_float32``). Citations are separated by ``; ``.
FASTRTC_CITATION = re.compile(r"^fastrtc (?:[a-z_]+/)*[a-z_-]+\.(?:md|py) §\S.*$")


@dataclass(frozen=True)
class Profile:
    """One catalogue file: its sections' id prefixes and how its sources are cited."""

    name: str
    path: Path
    title: str
    prefixes: dict[str, str]
    #: What each citation of ``source`` must look like (None: free form).
    citation: re.Pattern[str] | None = None


PROFILES: dict[str, Profile] = {
    "guide": Profile(
        "guide",
        CATALOGUE_PATH,
        "The user guide and the wire protocol",
        PREFIXES,
    ),
    "fastrtc": Profile(
        "fastrtc",
        FASTRTC_CATALOGUE_PATH,
        "fastrtc 0.0.34's handler API",
        FASTRTC_PREFIXES,
        FASTRTC_CITATION,
    ),
}
_ALL_PREFIXES: list[str] = [p for profile in PROFILES.values() for p in profile.prefixes.values()]


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
    #: The profile (catalogue file) it belongs to; set by :func:`parse`.
    profile: str = "guide"

    @property
    def sort_key(self) -> tuple[int, int]:
        match = ID_PATTERN.match(self.id)
        assert match is not None
        return _ALL_PREFIXES.index(match["area"]), int(match["number"])


@dataclass(frozen=True)
class Catalogue:
    """All requirements, in catalogue order, and the section titles."""

    sections: dict[str, str]
    requirements: tuple[Requirement, ...]
    #: The profiles it holds, in order.
    profiles: tuple[str, ...] = ("guide",)

    def __getitem__(self, requirement_id: str) -> Requirement:
        for requirement in self.requirements:
            if requirement.id == requirement_id:
                return requirement
        raise KeyError(f"no requirement {requirement_id!r} in the catalogue")

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

    def profile(self, name: str) -> Catalogue:
        """The requirements and sections of one profile."""
        if name not in self.profiles:
            raise KeyError(f"no profile {name!r} in the catalogue (has {list(self.profiles)})")
        prefixes = PROFILES[name].prefixes
        return Catalogue(
            sections={k: v for k, v in self.sections.items() if k in prefixes},
            requirements=tuple(r for r in self.requirements if r.profile == name),
            profiles=(name,),
        )


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


def parse(text: str, profile: str = "guide") -> Catalogue:
    """Parse and validate the catalogue TOML of ``profile``; raise :class:`CatalogueError`
    naming the problem."""
    if profile not in PROFILES:
        raise CatalogueError(f"unknown profile {profile!r}; known: {sorted(PROFILES)}")
    prefixes = PROFILES[profile].prefixes
    citation = PROFILES[profile].citation
    data = tomllib.loads(text)
    sections = data.get("sections")
    if not isinstance(sections, dict) or set(sections) != set(prefixes):
        raise CatalogueError(
            f"[sections] must name exactly {sorted(prefixes)}; got {sorted(sections or {})}"
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
        if entry["section"] not in prefixes:
            raise CatalogueError(f"{where}: unknown section {entry['section']!r}")
        if prefixes[entry["section"]] != match["area"]:
            raise CatalogueError(
                f"{where}: ids of section {entry['section']!r} start with "
                f"{prefixes[entry['section']]}-"
            )
        if citation is not None:
            bad = [c for c in entry["source"].split("; ") if not citation.match(c)]
            if bad:
                raise CatalogueError(
                    f"{where}: source citations of profile {profile!r} look like "
                    f"'fastrtc FILE §SECTION' (separated by '; '); not: {bad}"
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
        requirements.append(Requirement(**entry, profile=profile))
    return Catalogue(sections=dict(sections), requirements=tuple(requirements), profiles=(profile,))


def merge(catalogues: list[Catalogue]) -> Catalogue:
    """One catalogue of several profiles (ids and sections must not repeat)."""
    sections: dict[str, str] = {}
    requirements: list[Requirement] = []
    profiles: list[str] = []
    for catalogue in catalogues:
        for key, title in catalogue.sections.items():
            if key in sections:
                raise CatalogueError(f"section {key!r} is in two profiles")
            sections[key] = title
        requirements.extend(catalogue.requirements)
        profiles.extend(catalogue.profiles)
    ids = [r.id for r in requirements]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise CatalogueError(f"ids in two profiles: {duplicates}")
    return Catalogue(sections=sections, requirements=tuple(requirements), profiles=tuple(profiles))


@cache
def load(path: Path | None = None, profile: str | None = None) -> Catalogue:
    """Every profile's catalogue as one (default), or one catalogue file: ``path`` read as
    ``profile`` (default: the profile whose file it is, else ``guide``)."""
    if path is None and profile is None:
        return merge([load(p.path, name) for name, p in PROFILES.items()])
    if path is None:
        assert profile is not None
        path = PROFILES[profile].path
    if profile is None:
        profile = next((n for n, p in PROFILES.items() if p.path == path), "guide")
    return parse(path.read_text(encoding="utf-8"), profile)
