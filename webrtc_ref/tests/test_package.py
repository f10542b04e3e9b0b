"""The package imports, the command line works, and the demo app serves its page."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import webrtc_ref
from webrtc_ref.cli import main
from webrtc_ref.demos import DEMOS, UnknownDemoError, build_demo
from webrtc_ref.testing import launched


def test_import_is_light() -> None:
    """Importing the package does not import Gradio or aiortc (public names load lazily)."""
    code = (
        "import sys, webrtc_ref; print(sorted(m for m in ('gradio', 'aiortc') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_matches_metadata() -> None:
    from importlib.metadata import version

    assert webrtc_ref.__version__ == version("webrtc-ref")


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        webrtc_ref.Nope  # noqa: B018


def test_console_script_help() -> None:
    out = subprocess.run(["webrtc-ref", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout
    out = subprocess.run(["webrtc-ref", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"webrtc-ref {webrtc_ref.__version__}"


def test_demo_list_names_every_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(DEMOS)


def test_unknown_demo_lists_valid_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "no-such-demo"]) == 2
    err = capsys.readouterr().err
    assert "unknown demo 'no-such-demo'" in err
    for name in DEMOS:
        assert name in err
    with pytest.raises(UnknownDemoError):
        build_demo("no-such-demo")


@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_serves_page(name: str) -> None:
    """Each demo builds and answers HTTP 200 on / when launched on a loopback port."""
    app = build_demo(name)
    with launched(app) as url, urllib.request.urlopen(url + "/", timeout=10) as response:
        assert response.status == 200
        assert b"<html" in response.read(4096).lower()


def test_each_demo_page_says_what_it_does_and_what_to_try() -> None:
    """Every demo's page shows its ``about`` lines; the ``all`` page lists every demo's."""
    import json

    def markdown_of(name: str) -> str:
        with (
            launched(build_demo(name)) as url,
            urllib.request.urlopen(url + "/config", timeout=10) as response,
        ):
            config = json.loads(response.read())
        return "\n".join(
            str(c.get("props", {}).get("value", ""))
            for c in config["components"]
            if c.get("type") == "markdown"
        )

    abouts = {name: demo.about for name, demo in DEMOS.items() if name != "all"}
    for name, about in abouts.items():
        assert len(about) > 40 and about.count(".") <= 3, (name, about)
        assert about in markdown_of(name), name
    index = markdown_of("all")
    for name, about in abouts.items():
        assert index.count(about) == 2, name  # the overview and the demo's own tab


def test_importing_the_package_writes_nothing_into_the_source_tree() -> None:
    """Gradio writes a .pyi stub beside each component class it sees defined; webrtc_ref
    switches that off, so its source tree may be read-only."""
    import webrtc_ref.component as component_module

    stub = Path(component_module.__file__).with_suffix(".pyi")
    stub.unlink(missing_ok=True)  # a stub left by an older version
    subprocess.run(
        [sys.executable, "-c", "import webrtc_ref.component, webrtc_ref.demos"],
        check=True,
        capture_output=True,
    )
    assert not stub.exists(), f"importing webrtc_ref wrote {stub}"
    assert not list(Path(component_module.__file__).parent.glob("**/*.pyi"))
