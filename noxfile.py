"""Sessions for webrtc_ref. ``nox`` with no arguments runs what CI runs.

Sessions:
  tests        unit + integration tests of webrtc_ref and fixtures (real aiortc peers on loopback)
  conformance  the conformance suite against one implementation (parametrised by ``impl``;
               only webrtc_ref runs by default)
  conformance_report  merge the conformance runs into docs/conformance.md
  browser      Playwright tests in Debian Chromium against real Gradio apps (and Firefox)
  cluster      HAProxy in front of three replicas on loopback (routing, crash, drain)
  bench        benchmarks side by side (webrtc_ref, gradio_webrtc, fastrtc, bare aiortc);
               writes build/bench/results.json and docs/benchmarks.md
  lint         ruff check, ruff format --check, mypy
  docs         mkdocs build --strict
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.sessions = [
    "lint",
    "tests",
    "conformance(impl='webrtc_ref')",
    "browser",
    "cluster",
    "docs",
]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

CHROMIUM = os.environ.get("WEBRTC_REF_CHROMIUM", "/usr/bin/chromium")
PYTEST = ("python", "-m", "pytest", "--strict-markers", "-p", "no:cacheprovider")


def _apt_install(session: nox.Session, packages: dict[str, str]) -> None:
    """Make sure Debian ``packages`` ({package: binary path}) are installed.

    Installs them with apt-get when missing and running as root; otherwise fails with
    the command to run. Never downloads a browser any other way.
    """
    missing = [pkg for pkg, binary in packages.items() if not Path(binary).exists()]
    if not missing:
        return
    command = f"apt-get update && apt-get install -y {' '.join(missing)}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        session.error(f"missing {', '.join(missing)}; install with: sudo sh -c '{command}'")
    session.log(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def _install(session: nox.Session, extras: str = "test") -> None:
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and integration tests (webrtc_ref, fixtures) with real aiortc peers on loopback
    (and a loopback coturn for the TURN REST tests, a loopback HAProxy for the agent
    check's; node for the browser client's checks)."""
    _apt_install(
        session,
        {
            "espeak-ng": "/usr/bin/espeak-ng",
            "chromium": CHROMIUM,
            "coturn": "/usr/bin/turnserver",
            # node compiles the browser client (static/client.js as a module, the
            # component's js_on_load script) in test_component
            "nodejs": "/usr/bin/node",
            "haproxy": "/usr/sbin/haproxy",
        },
    )
    _install(session)
    session.run(*PYTEST, "webrtc_ref", "fixtures", *session.posargs)


#: Implementations the conformance suite runs against: --impl name -> the pins of its venv
#: (None: this project). Only webrtc_ref is in the default run (CI); the others are run on
#: demand, e.g. nox -s "conformance(impl='fastrtc')", then nox -s conformance_report.
CONFORMANCE_IMPLS: dict[str, list[str] | None] = {
    "webrtc_ref": None,
    # gradio_webrtc 0.0.16: its user guide is our spec; it needs a Gradio 5 that awaits async
    # server fns
    "gradio_webrtc": ["gradio_webrtc==0.0.16", "gradio==5.8.0", "requests"],
    # the last gradio_webrtc release; fails to import on later Gradio 5 (wasm_utils)
    "gradio_webrtc-0.0.31": ["gradio_webrtc==0.0.31", "gradio==5.9.1", "requests"],
    # onnxruntime: the suite injects webrtc_ref's offline pause detector into ReplyOnPause
    "fastrtc": ["fastrtc==0.0.34", "onnxruntime>=1.17"],
    # fastrtc's Stream without the Gradio component (it installs the `fastrtc` package);
    # Gradio 5 only for the suite's gr.Slider / gr.Number additional inputs
    "fastrtc_compact": ["fastrtc-compact==0.0.1", "gradio==5.50.0", "onnxruntime>=1.17"],
}
#: What the suite itself needs in a foreign venv (it is installed there with --no-deps).
CONFORMANCE_SUITE_DEPS = [
    "pytest>=8",
    "pytest-asyncio>=0.24",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "httpx",
    "numpy",
    "av",
    "aiortc",
]


@nox.session
@nox.parametrize("impl", list(CONFORMANCE_IMPLS))
def conformance(session: nox.Session, impl: str) -> None:
    """The conformance suite against one implementation, in its own venv.

    Writes build/conformance/<impl>.json. webrtc_ref also runs the suite's meta tests (the
    null and broken adapters must fail). Other implementations get their pinned release
    (Gradio 5) and the suite without dependencies; their known failures are listed in
    conformance/expectations/<impl>.toml.
    """
    _apt_install(session, {"espeak-ng": "/usr/bin/espeak-ng"})
    pins = CONFORMANCE_IMPLS[impl]
    env = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    if pins is None:
        _install(session)
        targets = ["conformance"]
    else:
        session.install(*pins)
        session.install(*CONFORMANCE_SUITE_DEPS)
        session.install("--no-deps", "-e", ".")
        # native tracebacks: pytest's own rendering of these libraries' long exception
        # chains has crashed the run (CPython 3.11 "AST constructor recursion depth")
        targets = ["conformance/tests", "--tb=native"]
    session.run(*PYTEST, *targets, f"--impl={impl}", *session.posargs, env=env)


@nox.session
def conformance_report(session: nox.Session) -> None:
    """Merge the conformance runs (build/conformance/*.json) into docs/conformance.md."""
    reports = [
        str(path)
        for impl in CONFORMANCE_IMPLS
        if (path := ROOT / "build" / "conformance" / f"{impl}.json").exists()
    ]
    if not reports:
        session.error("no reports in build/conformance: run the conformance sessions first")
    session.run("python", "-m", "conformance.report", *reports, "-o", "docs/conformance.md")


@nox.session
def browser(session: nox.Session) -> None:
    """Playwright tests in Debian Chromium against real Gradio apps (with a coturn relay),
    and the core scenarios in Debian Firefox ESR over WebDriver BiDi.

    Chromium, espeak-ng (speech fixtures), coturn (the TURN scenarios), firefox-esr and
    pulseaudio (a null sink for Firefox's audio output) are installed with apt-get if
    missing. Timings go to build/browser-timings.json; traces, console logs and
    screenshots of failed tests to build/browser-artifacts/ (the summary prints where).
    ``WEBRTC_REF_UPDATE_SCREENSHOTS=1 nox -s browser`` also refreshes docs/screenshots.
    """
    _apt_install(
        session,
        {
            "chromium": CHROMIUM,
            "espeak-ng": "/usr/bin/espeak-ng",
            "coturn": "/usr/bin/turnserver",
            "firefox-esr": "/usr/bin/firefox-esr",
            "pulseaudio": "/usr/bin/pulseaudio",
        },
    )
    _install(session)
    session.run(
        *PYTEST,
        "browser_tests",
        *session.posargs,
        env={"WEBRTC_REF_CHROMIUM": CHROMIUM},
    )


@nox.session
def cluster(session: nox.Session) -> None:
    """HAProxy (Debian's, installed with apt-get if missing) in front of three replicas of
    an app on loopback, with simulated browsers: spread, routing, isolation, a crash."""
    _apt_install(session, {"haproxy": "/usr/sbin/haproxy", "coturn": "/usr/bin/turnserver"})
    _install(session)
    session.run(
        *PYTEST,
        "cluster_tests",
        *session.posargs,
        env={"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"},
    )


#: Implementations ``nox -s bench`` measures (each from its conformance venv), by default.
BENCH_IMPLS: tuple[str, ...] = ("webrtc_ref", "gradio_webrtc", "fastrtc")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks side by side: webrtc_ref, gradio_webrtc, fastrtc and a bare aiortc floor.

    Each implementation runs from its conformance venv (created here with ``nox
    --install-only`` when missing). Writes build/bench/results.json, docs/benchmarks.md and
    the plots in docs/benchmarks/. Not part of the default run. Arguments go to
    ``python -m conformance.bench``: ``--quick``, ``--impl NAME`` (repeatable), ``--figure``
    (repeatable), ``--no-floor``. webrtc_ref's ReplyOnPause replay in simulated time is
    ``python -m conformance.bench reply-latency`` (not run here).
    """
    _apt_install(session, {"espeak-ng": "/usr/bin/espeak-ng"})
    _install(session)
    args = list(session.posargs)
    impls = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--impl"] or BENCH_IMPLS
    for impl in impls:
        if CONFORMANCE_IMPLS.get(impl) is not None:
            session.run(
                sys.executable,
                "-m",
                "nox",
                "--install-only",
                "--session",
                f"conformance(impl='{impl}')",
                external=True,
            )
    session.run(
        "python",
        "-m",
        "conformance.bench",
        "--json",
        "build/bench/results.json",
        "--md",
        "docs/benchmarks.md",
        *args,
        env={"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check and mypy."""
    # mypy checks against the real dependencies (av, aiortc, gradio), as developers do.
    # The linters are pinned: a new ruff or mypy release may reformat or flag code that
    # passed yesterday, and CI must not change its verdict on an unchanged tree.
    session.install("-e", ".", "ruff==0.17.6", "mypy==2.4.1")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run(
        "mypy",
        "webrtc_ref",
        "fixtures",
        "conformance/bench",
        "conformance/adapters",
        "conformance/plugin.py",
        "conformance/wire.py",
        "conformance/avsync.py",
        "conformance/gradio_http.py",
        "conformance/helpers.py",
    )


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with mkdocs --strict."""
    session.install("mkdocs-material>=9.5", "mkdocstrings[python]>=0.26", "ruff==0.17.6")
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "build/site", env={"NO_MKDOCS_2_WARNING": "1"}
    )


@nox.session
def demo(session: nox.Session) -> None:
    """Run the demo app (``nox -s demo -- NAME --port 7860``)."""
    _install(session, "test")
    session.run("webrtc-ref", "demo", *session.posargs)
