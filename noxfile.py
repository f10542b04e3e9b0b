"""Sessions for webrtc_ref. ``nox`` with no arguments runs what CI runs.

Sessions:
  tests        unit + integration tests of webrtc_ref and fixtures (real aiortc peers on loopback)
  conformance  the conformance suite against one implementation (parametrised by ``impl``)
  browser      Playwright tests in Debian Chromium against real Gradio apps
  bench        benchmarks; prints figures and writes docs/benchmarks.md
  lint         ruff check, ruff format --check, mypy
  docs         mkdocs build --strict
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.sessions = ["lint", "tests", "conformance", "browser", "docs"]
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
    """Unit and integration tests (webrtc_ref, fixtures) with real aiortc peers on loopback."""
    _apt_install(session, {"espeak-ng": "/usr/bin/espeak-ng", "chromium": CHROMIUM})
    _install(session)
    session.run(*PYTEST, "webrtc_ref", "fixtures", *session.posargs)


@nox.session
@nox.parametrize("impl", ["webrtc_ref"])
def conformance(session: nox.Session, impl: str) -> None:
    """The conformance suite against one implementation, in its own venv."""
    _apt_install(session, {"espeak-ng": "/usr/bin/espeak-ng"})
    _install(session)
    session.run(*PYTEST, "conformance", f"--impl={impl}", *session.posargs, success_codes=[0, 5])


@nox.session
def browser(session: nox.Session) -> None:
    """Playwright tests in Debian Chromium (installed with apt-get if missing)."""
    _apt_install(session, {"chromium": CHROMIUM, "espeak-ng": "/usr/bin/espeak-ng"})
    _install(session)
    session.run(
        *PYTEST,
        "browser_tests",
        *session.posargs,
        env={"WEBRTC_REF_CHROMIUM": CHROMIUM},
        success_codes=[0, 5],
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: print figures and write docs/benchmarks.md (not part of the default run)."""
    _apt_install(session, {"espeak-ng": "/usr/bin/espeak-ng"})
    _install(session)
    session.run("python", "-m", "webrtc_ref.bench", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check and mypy."""
    session.install("ruff>=0.6", "mypy>=1.10", "numpy")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "webrtc_ref", "fixtures")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with mkdocs --strict."""
    session.install("mkdocs-material>=9.5")
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "build/site", env={"NO_MKDOCS_2_WARNING": "1"}
    )


@nox.session
def demo(session: nox.Session) -> None:
    """Run the demo app (``nox -s demo -- NAME --port 7860``)."""
    _install(session, "test")
    session.run("webrtc-ref", "demo", *session.posargs)
