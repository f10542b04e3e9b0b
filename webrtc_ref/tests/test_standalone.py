"""The standalone page and client module over HTTP (uvicorn on 127.0.0.1), and the
``webrtc-ref serve`` command line. The page streaming in Chromium is
browser_tests/test_standalone.py."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator

import gradio as gr
import httpx
import pytest
import uvicorn

from webrtc_ref import Stream
from webrtc_ref.cli import main
from webrtc_ref.component import static_asset
from webrtc_ref.standalone import STREAMS, demo_stream, page_config, standalone_app
from webrtc_ref.testing import free_port, wait_until


def echo(frame: object, level: float, mode: str) -> object:
    return frame


@pytest.fixture(scope="module")
def stream() -> Stream:
    return Stream(
        echo,
        modality="video",
        additional_inputs=[
            gr.Slider(label="level", minimum=0, maximum=10, step=1, value=3),
            gr.Dropdown(label="mode", choices=["a", "</script><b>"], value="a"),
        ],
        additional_outputs=[gr.Number(label="mean")],
    )


@pytest.fixture(scope="module")
def url(stream: Stream) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            standalone_app(stream, "a <title>"), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def test_mount_serves_the_client_module(url: str) -> None:
    response = httpx.get(f"{url}/client.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.text == static_asset("client.js")
    assert "export async function connect(" in response.text


def test_the_page_uses_the_client_module_with_the_streams_configuration(
    url: str, stream: Stream
) -> None:
    response = httpx.get(f"{url}/")
    assert response.status_code == 200
    page = response.text
    assert 'import { connect } from "./client.js";' in page
    assert "gradio_api" not in page and "<gradio" not in page  # no Gradio app
    assert "<title>a &lt;title&gt;</title>" in page
    raw = re.search(
        r'<script type="application/json" id="webrtc-ref-config">(.*?)</script>', page, re.S
    )
    assert raw is not None
    assert "</script>" not in raw.group(1) and "<b>" not in raw.group(1)  # escaped
    config = json.loads(raw.group(1))
    assert config == page_config(stream)
    assert config["mode"] == "send-receive" and config["modality"] == "video"
    assert config["inputs"] == [
        {"label": "level", "kind": "range", "min": 0, "max": 10, "step": 1, "value": 3},
        {"label": "mode", "kind": "select", "choices": ["a", "</script><b>"], "value": "a"},
    ]
    assert config["outputs"] == ["mean"]


def test_every_served_demo_builds_its_stream() -> None:
    for name in STREAMS:
        stream = demo_stream(name)
        config = page_config(stream)
        assert config["modality"] == stream.modality, name
    assert page_config(demo_stream("receive-audio"))["inputs"][0]["kind"] == "range"
    assert page_config(demo_stream("additional-outputs"))["outputs"] == ["heard"]


def test_serve_lists_and_refuses_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert all(name in listed for name in STREAMS)
    assert main(["serve", "no-such-demo"]) == 2
    err = capsys.readouterr().err
    assert "unknown demo 'no-such-demo'" in err and "echo-audio" in err
    assert main(["serve", "echo-audio", "--port", "0"]) == 2
    assert "--port must be 1-65535" in capsys.readouterr().err
