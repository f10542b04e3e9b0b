"""Tests of the suite itself: the catalogue, the expectation files, the report, the wire
helpers, and proof that the suite can fail.

The ``null`` adapter (implements nothing) and the ``broken`` adapter (webrtc_ref with
deliberate defects) are run through the suite in subprocesses, restricted to a few
requirements; their JSON reports must show FAIL exactly where expected and PASS on the
controls. Both runs start together, in a module fixture, to save time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance import catalogue as catalogue_module
from conformance import expectations as expectations_module
from conformance.gradio_http import apply_diff
from conformance.report import combine, render_markdown, totals
from conformance.wire import END, ERROR, INPUTS, OTHER, OUTPUTS, classify, message_text

ROOT = Path(__file__).resolve().parents[2]

#: Requirements the null adapter must fail (it has no offer function, no validation...).
NULL_FAILS = ("API-004", "API-012", "SIG-001", "SIG-002", "AUD-001", "LIM-002")
#: The broken adapter's defects and the requirements they must fail.
BROKEN_FAILS = ("API-005", "VID-003", "VID-006", "LIM-002", "OUT-001")
#: Requirements the broken adapter still meets (the suite fails for the right reason).
BROKEN_PASSES = ("API-004", "SIG-002", "VID-001", "VID-002")


# -- the catalogue -----------------------------------------------------------------------------


def test_catalogue_loads_and_covers_every_section() -> None:
    catalogue = catalogue_module.load()
    assert len(catalogue) >= 80
    assert {r.section for r in catalogue} == set(catalogue.sections)
    counts = catalogue.count_by_level()
    assert counts["MUST"] > 0 and counts["SHOULD"] > 0


def test_catalogue_rejects_a_duplicate_id() -> None:
    text = catalogue_module.CATALOGUE_PATH.read_text(encoding="utf-8")
    duplicate = text + (
        '\n[[requirement]]\nid = "API-001"\nsection = "component-api"\nlevel = "MUST"\n'
        'statement = "again"\nsource = "guide:3"\n'
    )
    with pytest.raises(catalogue_module.CatalogueError, match="duplicate id API-001"):
        catalogue_module.parse(duplicate)


def test_catalogue_needs_a_rationale_for_unstated_shoulds() -> None:
    text = catalogue_module.CATALOGUE_PATH.read_text(encoding="utf-8") + (
        '\n[[requirement]]\nid = "ERR-999"\nsection = "errors"\nlevel = "SHOULD"\n'
        'statement = "x"\nsource = "anchor B1"\n'
    )
    with pytest.raises(catalogue_module.CatalogueError, match="needs a rationale"):
        catalogue_module.parse(text)


def test_every_requirement_has_a_test_and_every_test_a_requirement() -> None:
    catalogue = catalogue_module.load()
    index = expectations_module.test_index()
    untested = [rid for rid in catalogue.ids if rid not in index]
    unknown = [rid for rid in index if rid not in catalogue]
    assert not untested, f"requirements without a test: {untested}"
    assert not unknown, f"tests marked with ids not in the catalogue: {unknown}"


def test_guide_and_anchor_disagreements_are_noted() -> None:
    catalogue = catalogue_module.load()
    assert "BGR" in (catalogue["VID-003"].note or "")
    assert "block" in (catalogue["HND-005"].note or "")


# -- expectation files -------------------------------------------------------------------------


def _expectations(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "impl.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_expectation_entries_apply(tmp_path: Path) -> None:
    path = _expectations(tmp_path, '[[xfail]]\nid = "VID-003"\nreason = "hands BGR"\n')
    entries = expectations_module.load(
        path, catalogue_module.load(), expectations_module.test_index()
    )
    assert entries[0].matches("VID-003", "test_fn_gets_rgb")
    assert not entries[0].matches("VID-002", "test_fn_gets_rgb")


@pytest.mark.parametrize(
    "body",
    [
        '[[xfail]]\nid = "VID-999"\nreason = "no such requirement"\n',
        '[[xfail]]\nid = "VID-003"\nreason = "x"\ntest = "test_that_does_not_exist"\n',
        '[[xfail]]\nid = "VID-003"\nreason = ""\n',
        '[[skip]]\nid = "VID-003"\nreason = "x"\n',
    ],
)
def test_expectation_matching_no_test_is_an_error(tmp_path: Path, body: str) -> None:
    path = _expectations(tmp_path, body)
    with pytest.raises(expectations_module.ExpectationError):
        expectations_module.load(path, catalogue_module.load(), expectations_module.test_index())


def test_a_bad_expectation_file_stops_the_run(fauxmplementation_runs: dict[str, Any]) -> None:
    result = fauxmplementation_runs["bad-expectations"]
    assert result["returncode"] != 0
    assert "matches no test" in result["output"], result["output"][-2000:]


def test_a_known_failure_that_passes_fails_the_run(fauxmplementation_runs: dict[str, Any]) -> None:
    result = fauxmplementation_runs["stale-expectation"]
    assert result["returncode"] != 0, "a stale expectation did not fail the run"
    api_012 = result["results"]["API-012"]
    assert api_012["status"] == "FAIL" and "remove the expectation" in api_012["message"]


# -- report ------------------------------------------------------------------------------------


def test_requirement_status_combines_its_tests() -> None:
    assert combine(["PASS", "PASS"]) == "PASS"
    assert combine(["PASS", "FAIL"]) == "FAIL"
    assert combine(["UNSUPPORTED", "PASS"]) == "PASS"
    assert combine(["UNSUPPORTED"]) == "UNSUPPORTED"
    assert combine(["XFAIL", "PASS"]) == "XFAIL"


def test_report_renders_one_row_per_requirement() -> None:
    catalogue = catalogue_module.load()
    results = {r.id: {"status": "PASS", "message": ""} for r in catalogue}
    results["VID-003"] = {"status": "FAIL", "message": "BGR\nmore"}
    runs = [
        {"implementation": "a", "version": "1", "results": results, "duration": 1.0},
        {"implementation": "b", "version": "2", "results": {}, "duration": 1.0},
    ]
    text = render_markdown(runs, catalogue)
    for requirement in catalogue:
        assert f"| {requirement.id} | {requirement.level} |" in text
    assert "| VID-003 | MUST |" in text and "**FAIL**" in text
    must = totals(results, catalogue)["MUST"]
    assert must["FAIL"] == 1 and must["PASS"] == catalogue.count_by_level()["MUST"] - 1


# -- wire helpers ------------------------------------------------------------------------------


def test_gradio_output_diffs_apply() -> None:
    value: Any = {"a": [1, 2], "b": "x"}
    value = apply_diff(value, [["append", ["b"], "yz"], ["add", ["a", 2], 3]])
    assert value == {"a": [1, 2, 3], "b": "xyz"}
    assert apply_diff(value, [["replace", [], 5]]) == 5


def test_data_channel_dialects_are_understood() -> None:
    assert classify("tick") == INPUTS
    assert classify('{"type": "send_input", "data": []}') == INPUTS
    assert classify("change") == OUTPUTS
    assert classify('{"type": "fetch_output", "data": []}') == OUTPUTS
    assert classify('{"type": "error", "message": "boom"}') == ERROR
    assert message_text('{"type": "error", "data": "boom"}') == "boom"
    assert classify('{"type": "end_stream", "reason": "time_limit"}') == END
    assert classify("Server received: handshake") == OTHER


# -- the suite can fail ------------------------------------------------------------------------


def _pytest(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def fauxmplementation_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the suite against ``null`` and ``broken``, and once with an expectation file
    that matches no test, all at once; return their reports and outputs."""
    out = tmp_path_factory.mktemp("runs")
    bad = out / "bad.toml"
    bad.write_text('[[xfail]]\nid = "VID-003"\nreason = "x"\ntest = "nope"\n', encoding="utf-8")
    processes = {
        impl: _pytest(
            "conformance/tests",
            f"--impl={impl}",
            f"--requirement={','.join(ids)}",
            f"--conformance-report={out / impl}.json",
        )
        for impl, ids in (("null", NULL_FAILS), ("broken", BROKEN_FAILS + BROKEN_PASSES))
    }
    stale = out / "stale.toml"
    stale.write_text(
        '[[xfail]]\nid = "API-012"\nreason = "listed although it passes"\n', encoding="utf-8"
    )
    processes["stale-expectation"] = _pytest(
        "conformance/tests/test_component_api.py",
        "--impl=webrtc_ref",
        "--requirement=API-012",
        f"--expectations={stale}",
        f"--conformance-report={out / 'stale-expectation'}.json",
    )
    processes["bad-expectations"] = _pytest(
        "conformance/tests/test_component_api.py",
        "--collect-only",
        f"--expectations={bad}",
        "--conformance-report=-",
    )
    runs: dict[str, Any] = {}
    for name, process in processes.items():
        output, _ = process.communicate(timeout=600)
        path = out / f"{name}.json"
        runs[name] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        runs[name]["returncode"] = process.returncode
        runs[name]["output"] = output
    return runs


def test_null_adapter_fails(fauxmplementation_runs: dict[str, Any]) -> None:
    report = fauxmplementation_runs["null"]
    assert report["returncode"] != 0
    assert "results" in report, f"the null run wrote no report:\n{report['output'][-3000:]}"
    statuses = {rid: r["status"] for rid, r in report["results"].items()}
    assert statuses == dict.fromkeys(NULL_FAILS, "FAIL"), statuses


def test_broken_adapter_fails_exactly_its_defects(fauxmplementation_runs: dict[str, Any]) -> None:
    report = fauxmplementation_runs["broken"]
    assert report["returncode"] != 0
    assert "results" in report, f"the broken run wrote no report:\n{report['output'][-3000:]}"
    statuses = {rid: r["status"] for rid, r in report["results"].items()}
    expected = {**dict.fromkeys(BROKEN_FAILS, "FAIL"), **dict.fromkeys(BROKEN_PASSES, "PASS")}
    assert statuses == expected, {rid: report["results"][rid]["message"][:200] for rid in statuses}
