"""The suite's pytest hooks: implementation selection, requirement markers, UNSUPPORTED,
expectation files and the JSON report. Imported by ``conformance/conftest.py``.

Options:
    --impl NAME             implementation under test (default webrtc_ref; see
                            conformance.adapters.REGISTRY, or module:attribute)
    --requirement IDS       run only the tests of these requirement ids (comma-separated)
    --profile NAMES         run only the tests of these catalogue profiles (comma-separated:
                            guide, fastrtc; default all)
    --expectations PATH     known failures (default conformance/expectations/<impl>.toml)
    --conformance-report P  where to write the run's JSON (default
                            build/conformance/<impl>.json; "-" for none)
"""

from __future__ import annotations

import datetime
import json
import platform
import time
from pathlib import Path
from typing import Any

import pytest

from conformance import catalogue as catalogue_module
from conformance import expectations as expectations_module
from conformance.adapters.base import Unsupported
from conformance.report import combine, totals

TESTS_DIR = Path(__file__).with_name("tests").resolve()
_STATE = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance")
    group.addoption("--impl", default="webrtc_ref", help="implementation under test")
    group.addoption(
        "--requirement",
        default=None,
        help="comma-separated requirement ids: run only their tests",
    )
    group.addoption(
        "--profile",
        default=None,
        help="comma-separated catalogue profiles (guide, fastrtc): run only their tests",
    )
    group.addoption("--expectations", default=None, help="expectation file (known failures)")
    group.addoption(
        "--conformance-report",
        default=None,
        help="path of the run's JSON report (default build/conformance/<impl>.json; - for none)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requirement(id): the conformance requirement a test checks")
    config.stash[_STATE] = {
        "tests": {},
        "started": time.time(),
        "expectations": [],
        "expected": {},
    }


def _is_suite_test(item: pytest.Item) -> bool:
    return Path(str(item.fspath)).resolve().is_relative_to(TESTS_DIR)


def requirement_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("requirement")
    return str(marker.args[0]) if marker is not None and marker.args else None


def _expectations_of(impl: str) -> str:
    """Whose expectation file applies to ``--impl impl`` (the adapter may name another's)."""
    try:
        from conformance.adapters import get_adapter

        return get_adapter(impl).expectations or impl
    except Exception:  # the adapter cannot load: its own name (the run reports the error)
        return impl


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    catalogue = catalogue_module.load()
    problems = []
    for item in items:
        if not _is_suite_test(item):
            continue
        markers = list(item.iter_markers("requirement"))
        if len(markers) != 1 or len(markers[0].args) != 1:
            problems.append(f"{item.nodeid}: needs exactly one @pytest.mark.requirement(ID)")
        elif markers[0].args[0] not in catalogue:
            problems.append(f"{item.nodeid}: {markers[0].args[0]} is not in the catalogue")
    if problems:
        raise pytest.UsageError("conformance suite:\n  " + "\n  ".join(problems))

    impl = config.getoption("--impl")
    path_option = config.getoption("--expectations")
    path = (
        Path(path_option)
        if path_option
        else expectations_module.default_path(_expectations_of(impl))
    )
    if path_option or path.exists():
        try:
            entries = expectations_module.load(path, catalogue, expectations_module.test_index())
        except expectations_module.ExpectationError as exc:
            raise pytest.UsageError(f"expectations: {exc}") from exc
        config.stash[_STATE]["expectations"] = entries
        for item in items:
            requirement = requirement_of(item)
            for entry in entries:
                if requirement is not None and entry.matches(requirement, item.name):
                    # Not strict per test: a parametrised requirement may fail for some
                    # parameters only. Staleness is judged per expectation at the end.
                    item.add_marker(pytest.mark.xfail(reason=entry.reason, strict=False))
                    config.stash[_STATE]["expected"][item.nodeid] = entry

    wanted = config.getoption("--requirement")
    profiles = config.getoption("--profile")
    if wanted or profiles:
        ids = set(catalogue.ids)
        if wanted:
            ids = {w.strip() for w in wanted.split(",") if w.strip()}
            unknown = ids - set(catalogue.ids)
            if unknown:
                raise pytest.UsageError(f"--requirement: unknown ids {sorted(unknown)}")
        if profiles:
            names = {w.strip() for w in profiles.split(",") if w.strip()}
            unknown = names - set(catalogue.profiles)
            if unknown:
                raise pytest.UsageError(
                    f"--profile: unknown profiles {sorted(unknown)}; known: "
                    f"{list(catalogue.profiles)}"
                )
            ids &= {r.id for r in catalogue if r.profile in names}
        keep = [i for i in items if requirement_of(i) in ids or not _is_suite_test(i)]
        dropped = [i for i in items if i not in keep]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(Unsupported):
        report.outcome = "skipped"
        report.longrepr = (str(item.fspath), item.location[1], f"UNSUPPORTED: {call.excinfo.value}")
    return report


def _message(report: pytest.TestReport) -> str:
    if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).strip()
    return str(report.longreprtext).strip().splitlines()[-1] if report.longreprtext else ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    config = _CONFIG.get("config")
    if config is None:
        return
    tests = config.stash[_STATE]["tests"]
    entry = tests.get(report.nodeid)
    if entry is None:
        return
    entry["duration"] += report.duration
    entry["ran"] = True
    if entry["status"] is not None and entry["status"] != "PASS":
        return
    wasxfail = getattr(report, "wasxfail", None)
    if report.outcome == "skipped":
        if wasxfail is not None:
            entry["status"], entry["message"] = "XFAIL", f"{wasxfail}"
        else:
            entry["status"], entry["message"] = "UNSUPPORTED", _message(report)
            if entry["message"].startswith("Skipped: "):
                entry["message"] = entry["message"][len("Skipped: ") :]
    elif report.outcome == "failed":
        if report.when == "call":
            entry["status"], entry["message"] = "FAIL", _message(report)
        else:
            entry["status"], entry["message"] = "ERROR", f"{report.when}: {_message(report)}"
    elif report.when == "call":
        entry["status"] = "XPASS" if wasxfail is not None else "PASS"


_CONFIG: dict[str, pytest.Config] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    _CONFIG["config"] = session.config
    tests = session.config.stash[_STATE]["tests"]
    for item in session.items:
        requirement = requirement_of(item)
        if requirement is not None and _is_suite_test(item):
            tests[item.nodeid] = {
                "requirement": requirement,
                "status": None,
                "message": "",
                "duration": 0.0,
                "ran": False,
            }


def _versions() -> dict[str, str]:
    try:
        import gradio

        gradio_version = str(gradio.__version__)
    except Exception:  # pragma: no cover - gradio always present in practice
        gradio_version = "?"
    return {"python": platform.python_version(), "gradio": gradio_version}


def stale_expectations(config: pytest.Config) -> dict[str, str]:
    """Requirement id -> expectation reason, for strict expectations whose tests all passed."""
    state = config.stash[_STATE]
    by_entry: dict[Any, list[str]] = {}
    for nodeid, entry in state["expected"].items():
        test = state["tests"].get(nodeid)
        if test is not None and test["ran"]:
            by_entry.setdefault(entry, []).append(test["status"])
    return {
        entry.id: entry.reason
        for entry, statuses in by_entry.items()
        if entry.strict and statuses and all(s == "XPASS" for s in statuses)
    }


def build_report(config: pytest.Config) -> dict[str, Any] | None:
    state = config.stash[_STATE]
    tests = state["tests"]
    if not tests:
        return None
    catalogue = catalogue_module.load()
    impl = config.getoption("--impl")
    try:
        from conformance.adapters import get_adapter

        version = get_adapter(impl).version()
    except Exception as exc:
        version = f"? ({exc})"
    results: dict[str, dict[str, Any]] = {}
    for nodeid, entry in tests.items():
        if entry["status"] is None and not entry["ran"]:
            continue  # deselected, or the run stopped before it (-x)
        status = entry["status"] or "ERROR"
        message = entry["message"] if entry["status"] else "did not run to completion"
        result = results.setdefault(
            entry["requirement"],
            {"status": None, "message": "", "duration": 0.0, "tests": [], "_statuses": []},
        )
        result["_statuses"].append((status, message))
        result["duration"] = round(result["duration"] + entry["duration"], 3)
        result["tests"].append(nodeid)
    stale = stale_expectations(config)
    for requirement_id, result in results.items():
        statuses = result.pop("_statuses")
        if requirement_id in stale:
            result["status"] = "FAIL"
            result["message"] = (
                f"passed, but {stale[requirement_id]!r} lists it as a known failure: "
                "remove the expectation"
            )
            continue
        # XPASS: a parameter of a known failure that passes; the requirement stays XFAIL
        kinds = [("PASS" if s == "XPASS" else s, m) for s, m in statuses]
        if any(s == "XPASS" for s, _ in statuses) and any(s == "XFAIL" for s, _ in kinds):
            kinds = [(s, m) for s, m in kinds if s != "PASS"]
        result["status"] = combine(s for s, _ in kinds)
        result["message"] = next((m for s, m in kinds if s == result["status"]), "")
    ordered = {r.id: results[r.id] for r in catalogue if r.id in results}
    return {
        "implementation": impl,
        "version": version,
        **_versions(),
        "started": datetime.datetime.fromtimestamp(state["started"], datetime.timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
        "duration": round(time.time() - state["started"], 1),
        "expectations": [
            {"id": e.id, "reason": e.reason, **({"test": e.test} if e.test else {})}
            for e in state["expectations"]
        ],
        "results": ordered,
        "totals": totals(ordered, catalogue),
        "profiles": {name: totals(ordered, catalogue.profile(name)) for name in catalogue.profiles},
    }


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if stale_expectations(config) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a known failure now passes
    config.stash[_STATE]["exitstatus"] = int(session.exitstatus)
    report = build_report(config)
    if report is None:
        return
    option = config.getoption("--conformance-report")
    if option == "-":
        return
    path = (
        Path(option)
        if option
        else Path(str(config.rootpath))
        / "build"
        / "conformance"
        / f"{report['implementation']}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    config.stash[_STATE]["report_path"] = path


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    report = build_report(config)
    if report is None:
        return
    terminalreporter.section(f"conformance: {report['implementation']} {report['version']}")
    for profile, by_level in report["profiles"].items():
        ran = any(n for counts in by_level.values() for s, n in counts.items() if s != "NOT RUN")
        if not ran:
            continue
        terminalreporter.write_line(f"{profile} profile:")
        for level, counts in by_level.items():
            shown = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
            if shown:
                terminalreporter.write_line(f"  {level:6} {shown}")
    path = config.stash[_STATE].get("report_path")
    if path is not None:
        terminalreporter.write_line(f"report: {path}")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Do not let an implementation's stuck threads keep the run from ending.

    Some implementations leave threads blocked forever (gradio_webrtc's emit threads in a
    thread pool); the interpreter would wait for them at exit (thread
    pools are joined at exit even when their threads are daemons). After a grace period
    the run exits with its own status instead, saying so. Runs last, after every other
    plugin has finished.
    """
    import concurrent.futures.thread as pool_threads
    import os
    import sys
    import threading

    state = config.stash.get(_STATE, {})
    if "exitstatus" not in state:
        return

    def blocking() -> list[threading.Thread]:
        pooled = list(getattr(pool_threads, "_threads_queues", {}))
        plain = [t for t in threading.enumerate() if not t.daemon]
        return [t for t in {*pooled, *plain} if t is not threading.main_thread() and t.is_alive()]

    deadline = time.time() + 3.0
    for thread in blocking():
        thread.join(max(0.0, deadline - time.time()))
    stuck = blocking()
    if stuck:
        names = ", ".join(sorted({t.name for t in stuck})[:5])
        sys.stderr.write(
            f"conformance: {len(stuck)} threads left by the implementation are still running "
            f"({names}); exiting without waiting for them\n"
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(state["exitstatus"])
