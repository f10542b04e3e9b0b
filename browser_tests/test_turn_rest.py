"""Per-connection ICE configuration in Chromium: TURN REST credentials minted by the app
for each connection, through a real coturn (``use-auth-secret``) started here on loopback.

The page carries no configuration: when Start is pressed the client asks the server's
``rtc_config`` function for one, and creates its peer connection with it. The returned
configuration allows relay candidates only (``iceTransportPolicy: "relay"``), so the
frames that come back went through coturn with those credentials. The TURN secret is in
none of: the page's HTML, ``/config``, the rendered DOM, the bodies of the page's requests
and responses (Playwright's view of its network traffic).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
import pytest

from browser_tests.apps import identity
from browser_tests.helpers import Peer, assert_in_order, frame_ids, poll
from webrtc_ref import WebRTC, turn_rest_configuration
from webrtc_ref.testing import Coturn, coturn, launched

pytestmark = [pytest.mark.browser, pytest.mark.slow]

USER = "browser-test"


@pytest.fixture(scope="module")
def turn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    try:
        with coturn(tmp_path_factory.mktemp("coturn-rest")) as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))


class Minting:
    """The app's per-connection function: TURN REST credentials, counted."""

    def __init__(self, server: Coturn) -> None:
        self.mint = turn_rest_configuration(
            server.secret, server.url, ttl=300, user=USER, ice_transport_policy="relay"
        )
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return self.mint()


#: Copies what the page reads from event streams (Gradio's queue, read with fetch), which
#: Playwright cannot give while the stream is open.
TEE_EVENT_STREAMS = """
(() => {
  const seen = [];
  window.__eventStreamText = seen;
  const original = window.fetch;
  window.fetch = async function (...args) {
    const response = await original.apply(this, args);
    const type = response.headers.get("content-type") || "";
    if (type.includes("text/event-stream") && response.body) {
      const reader = response.clone().body.getReader();
      const decoder = new TextDecoder();
      (async () => {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          seen.push(decoder.decode(value, { stream: true }));
        }
      })().catch(() => {});
    }
    return response;
  };
})();
"""


class NetworkLog:
    """Every request and response of a page from its (re)load on, with their bodies."""

    def __init__(self, peer: Peer, url: str) -> None:
        self.page = peer.page
        self.responses: list[Any] = []
        self.requests: list[Any] = []
        peer.context.add_init_script(script=TEE_EVENT_STREAMS)
        self.page.on("request", lambda request: self.requests.append(request))
        self.page.on("response", lambda response: self.responses.append(response))
        peer.open(url)  # again, now that every request of the page load is seen

    def texts(self) -> list[tuple[str, str]]:
        """(url, text) of each request's URL and body, each response's headers and body
        and what the page read from event streams."""
        out: list[tuple[str, str]] = []
        streamed = "".join(self.page.evaluate("() => window.__eventStreamText"))
        out.append(("event streams", streamed))
        for request in self.requests:
            out.append((request.url, request.url))
            if request.post_data:
                out.append((request.url, request.post_data))
        for response in self.responses:
            headers = json.dumps(response.headers)
            out.append((response.url, headers))
            if "text/event-stream" in response.headers.get("content-type", ""):
                continue  # read by the page's copy above
            try:
                body = response.body()
            except Exception:  # redirects and evicted bodies have none
                continue
            out.append((response.url, body.decode("utf-8", "replace")))
        return out


def expected_credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


REFUSAL = "No relay for you today"


def refuse() -> dict[str, Any]:
    raise gr.Error(REFUSAL)


@pytest.fixture(scope="module")
def app(turn: Coturn) -> Iterator[tuple[str, WebRTC, Minting, WebRTC]]:
    """A video echo whose configuration is minted per connection, and one whose function
    refuses."""
    minting = Minting(turn)
    with gr.Blocks(title="TURN REST") as demo:
        video = WebRTC(label="Per-connection TURN", elem_id="ice", rtc_configuration=minting)
        video.stream(identity, inputs=[video], outputs=[video], time_limit=60)
        broken = WebRTC(label="Refused", elem_id="refused", rtc_configuration=refuse)
        broken.stream(identity, inputs=[broken], outputs=[broken], time_limit=60)
    with launched(demo) as url:
        yield url, video, minting, broken


@pytest.mark.timeout(90)
def test_relay_only_with_credentials_minted_per_connection(
    open_peer: Callable[..., Peer], timings: Any, turn: Coturn, app: Any
) -> None:
    url, video, minting, _ = app
    with urllib.request.urlopen(url + "/", timeout=10) as response:
        html = response.read().decode()
    with urllib.request.urlopen(url + "/config", timeout=10) as response:
        config = response.read().decode()
    for text in (html, config):
        assert turn.secret not in text
        assert USER not in text  # nothing minted at page load
    entry = next(c for c in json.loads(config)["components"] if c["id"] == video._id)
    assert entry["props"]["props"]["rtc_configuration_per_connection"] is True

    peer = open_peer(url, root="#ice .webrtc-ref", name="minted")
    network = NetworkLog(peer, url)
    client_config = peer.eval("(root) => root.__webrtc.config()")
    assert client_config["rtcConfiguration"] is None
    assert client_config["perConnectionRtc"] is True
    before = minting.calls  # 0 unless another test of this module started a stream

    server_side = video.stream_server
    assert server_side is not None
    sessions = []
    usernames = []
    for n in (1, 2):
        peer.start()
        state = peer.wait_state("streaming", "error", timeout=30)
        assert state == "streaming", f"{peer.text('.wr-error')}\ncoturn:\n{turn.log_tail()}"
        assert minting.calls == before + n  # once per connection, when it starts
        used = peer.eval("(root) => root.__webrtc.pc.getConfiguration()")
        assert used["iceTransportPolicy"] == "relay"
        server = used["iceServers"][0]
        assert server["username"].endswith(f":{USER}")
        assert server["credential"] == expected_credential(turn.secret, server["username"])
        usernames.append(server["username"])
        session = peer.wait_first_media()
        ids = frame_ids(peer.capture_frames(20))
        stats = peer.stats()
        assert_in_order(ids)
        assert {c["candidateType"] for c in stats["local"].values()} == {"relay"}
        assert stats["pairLocal"]["candidateType"] == "relay", stats["pairLocal"]
        assert stats["pair"]["bytesReceived"] > 10_000, stats["pair"]
        sessions.append(session)
        peer.stop()
        peer.wait_state("idle")
        poll(lambda: len(server_side) == 0, 10, "the server to release the connection")

    dom = peer.page.content()
    assert turn.secret not in dom
    texts = network.texts()
    leaked = [u for u, text in texts if turn.secret in text]
    assert not leaked, leaked
    # the capture is not blind: the minted (public, expiring) credentials are in it, and
    # so are the inputs' unqueued tick events and the page load
    assert any(usernames[0] in text for u, text in texts if "component_server" in u)
    assert any("/run/predict" in u for u, _ in texts), [u for u, _ in texts]
    assert any(u.rstrip("/") == url for u, _ in texts)

    for n, session in enumerate(sessions, 1):
        timings.record(
            "ICE per connection (TURN REST, relay only)", session, f"start {n}", relay=True
        )


@pytest.mark.timeout(60)
def test_a_refused_configuration_stops_the_start(open_peer: Callable[..., Peer], app: Any) -> None:
    """The function raised: the page shows its message and code, no peer connection is
    made and the server holds nothing."""
    url, _, _, broken = app
    peer = open_peer(url, root="#refused .webrtc-ref", name="refused")
    peer.start()
    assert peer.wait_state("error", "streaming") == "error"
    assert peer.attr("data-error-code") == "rtc_configuration_failed"
    assert peer.text(".wr-error") == REFUSAL
    assert peer.eval("(root) => root.__webrtc.pc === null")
    assert broken.stream_server is not None and len(broken.stream_server) == 0


@pytest.mark.timeout(60)
def test_a_rate_limited_start_is_retried(open_peer: Callable[..., Peer]) -> None:
    """A second Start within the session's rate limit gets ``too_many_requests`` from
    ``rtc_config``; the client waits the server's ``retry_after`` and retries, and the
    stream starts instead of showing the error."""
    from webrtc_ref.ice import Rate, RTCConfigurationSource

    calls: list[float] = []

    def configuration() -> dict[str, Any]:
        calls.append(0.0)
        return {"iceServers": []}

    source = RTCConfigurationSource(configuration, per_session=Rate(burst=1, per_minute=60))
    with gr.Blocks() as demo:
        video = WebRTC(label="Limited", rtc_configuration=source, elem_id="limited")
        video.stream(identity, inputs=[video], outputs=[video], concurrency_limit=None)
    with launched(demo) as url:
        peer = open_peer(url, root="#limited .webrtc-ref", name="limited")
        peer.start()
        assert peer.wait_state("streaming", "error") == "streaming", peer.text(".wr-error")
        peer.stop()
        assert peer.wait_state("idle") == "idle"
        peer.start()  # within a second: the bucket is empty
        assert peer.wait_state("streaming", "error", timeout=15) == "streaming", peer.text(
            ".wr-error"
        )
        peer.wait_first_media()
        assert len(calls) == 2  # the refused call never reached the function
        peer.stop()
