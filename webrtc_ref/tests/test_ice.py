"""Per-connection ICE configuration and TURN REST credentials.

The ``rtc_configuration`` function is called off the event loop, within a timeout and
rate limits, and its result is checked; the browser reaches it through the ``rtc_config``
server function of a real Gradio app. TURN REST credentials are checked against a real
coturn started here on loopback (``use-auth-secret``): fresh ones allocate, expired ones
and ones made with another secret are refused, and an aiortc peer restricted to relay
candidates streams video through coturn with credentials the app minted for it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import pickle
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest

from conformance.gradio_http import GradioApp
from fixtures.tracks import BarcodeVideoTrack, FrameRecorder
from webrtc_ref import WebRTC, turn_rest_configuration, turn_rest_credentials
from webrtc_ref.ice import (
    MAX_CONFIGURATION_BYTES,
    Rate,
    RateLimiter,
    RTCConfigurationSource,
    TurnRestConfiguration,
    check_rtc_configuration,
)
from webrtc_ref.server import Client
from webrtc_ref.testing import (
    TIMEOUT_SCALE,
    ClientPeer,
    Coturn,
    async_wait_until,
    coturn,
    launched,
)

pytestmark = pytest.mark.timeout(90)

GOOD: dict[str, Any] = {
    "iceServers": [
        {"urls": "stun:127.0.0.1:3478"},
        {"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "p"},
    ],
    "iceTransportPolicy": "relay",
}
CLIENT = Client(session="session-1", address="10.0.0.1")


def expected_credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


# ---------------------------------------------------------------------------- TURN REST


def test_turn_rest_known_answer() -> None:
    """The credential is base64(HMAC-SHA1(secret, username)); vectors from openssl dgst."""
    with_user = turn_rest_credentials(
        "north-wind", "turn:127.0.0.1:3478", ttl=100, user="alice", now=1_699_999_900
    )
    assert with_user == {
        "iceServers": [
            {
                "urls": "turn:127.0.0.1:3478",
                "username": "1700000000:alice",
                "credential": "Oko4dt8u/EbTRjRUJWQDFm/zTCc=",
            }
        ]
    }
    bare = turn_rest_credentials(
        b"north-wind", ["turn:h:1?transport=udp", "turns:h:2"], ttl=0.5, now=1_699_999_999.9
    )
    assert bare["iceServers"][0]["username"] == "1700000000"
    assert bare["iceServers"][0]["credential"] == "cVe3L6GK/DCmTQvTcoiurB547Vo="
    assert bare["iceServers"][0]["urls"] == ["turn:h:1?transport=udp", "turns:h:2"]


def test_turn_rest_expiry_policy_and_no_secret() -> None:
    before = time.time()
    config = turn_rest_credentials(
        "s3cr3t-value", "turn:x:1", ttl=600, user="bob", ice_transport_policy="relay"
    )
    server = config["iceServers"][0]
    expiry = int(server["username"].split(":")[0])
    assert int(before) + 600 <= expiry <= int(time.time()) + 600
    assert server["username"].endswith(":bob")
    assert server["credential"] == expected_credential("s3cr3t-value", server["username"])
    assert config["iceTransportPolicy"] == "relay"
    assert "s3cr3t-value" not in json.dumps(config)
    assert check_rtc_configuration(config) == config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secret": ""}, "secret must be a non-empty str or bytes"),
        ({"secret": 12}, "secret must be a non-empty str or bytes"),
        ({"urls": []}, "urls must be a turn:/turns: URL or a non-empty list"),
        ({"urls": "stun:x:1"}, "urls must be turn: or turns: URLs"),
        ({"urls": ["turn:x:1", "http://x"]}, "urls must be turn: or turns: URLs"),
        ({"ttl": 0}, "ttl must be a positive number of seconds"),
        ({"ttl": -5}, "ttl must be a positive number of seconds"),
        ({"ttl": float("inf")}, "ttl must be a positive number of seconds"),
        ({"ttl": True}, "ttl must be a positive number of seconds"),
        ({"user": ""}, "user must be None or a non-empty string"),
        ({"ice_transport_policy": "none"}, "ice_transport_policy must be None, 'all' or 'relay'"),
    ],
)
def test_turn_rest_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"secret": "k", "urls": "turn:x:1", **kwargs}
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        turn_rest_credentials(args.pop("secret"), args.pop("urls"), **args)
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        args = {"secret": "k", "urls": "turn:x:1", **kwargs}
        turn_rest_configuration(args.pop("secret"), args.pop("urls"), **args)


def test_turn_rest_configuration_mints_per_call_and_keeps_its_secret() -> None:
    fn = turn_rest_configuration("hidden-secret-123", "turn:127.0.0.1:1", ttl=30, user="u")
    assert isinstance(fn, TurnRestConfiguration)
    assert "hidden-secret-123" not in repr(fn) and "hidden-secret-123" not in str(fn)
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(fn)
    first = fn()
    assert first["iceServers"][0]["credential"] == expected_credential(
        "hidden-secret-123", first["iceServers"][0]["username"]
    )
    assert fn() is not first  # a fresh dict each call


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "the configuration must be a dict; got NoneType"),
        ([], "the configuration must be a dict; got list"),
        ({}, "the configuration needs 'iceServers'"),
        ({"iceServers": "stun:x"}, "'iceServers' must be a list; got str"),
        ({"iceServers": [{"urls": "x"}] * 33}, "'iceServers' has 33 entries; at most 32"),
        ({"iceServers": ["stun:x"]}, "iceServers[0] must be a dict; got str"),
        ({"iceServers": [{"url": "stun:x"}]}, "iceServers[0] needs 'urls'"),
        ({"iceServers": [{"urls": []}]}, "iceServers[0]['urls'] must be a URL string or"),
        ({"iceServers": [{"urls": 5}]}, "iceServers[0]['urls'] must be a URL string or"),
        ({"iceServers": [{"urls": ["stun:x", 7]}]}, "iceServers[0]['urls'][1] must be a string"),
        ({"iceServers": [{"urls": "http://x"}]}, "iceServers[0]['urls'][0] must start with"),
        ({"iceServers": [{"urls": "turn:x"}]}, "iceServers[0] has turn: URLs, so it needs"),
        (
            {"iceServers": [{"urls": "turn:x", "username": "u", "credential": 5}]},
            "iceServers[0]['credential'] must be a string; got int",
        ),
        ({"iceServers": [], "iceTransportPolicy": "none"}, "'iceTransportPolicy' must be"),
        (
            {"iceServers": [], "certificates": [object()]},
            "the configuration must be JSON-serialisable",
        ),
        ({"iceServers": [], "x": float("nan")}, "the configuration must be JSON-serialisable"),
        ({"iceServers": [], "x": "a" * MAX_CONFIGURATION_BYTES}, "the configuration is "),
        ({"iceServers": [], 1: 2}, "the configuration's keys must be strings"),
    ],
)
def test_configuration_checks_name_the_place(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_rtc_configuration(value)
    assert str(info.value).startswith(message), info.value


def test_configuration_check_never_shows_a_credential() -> None:
    bad = {"iceServers": [{"urls": "turn:x", "username": "u", "credential": "LEAK-ME" * 400}]}
    with pytest.raises(ValueError) as info:
        check_rtc_configuration(bad)
    assert "LEAK-ME" not in str(info.value)


def test_configuration_check_returns_a_plain_copy() -> None:
    value: dict[str, Any] = {"iceServers": [{"urls": "stun:x"}], "bundlePolicy": "x"}
    copy = check_rtc_configuration(value)
    assert copy == value and copy is not value
    value["iceServers"].append({"urls": "stun:y"})
    assert len(copy["iceServers"]) == 1


# ---------------------------------------------------------------------------- rate limits


def test_rate_limiter_buckets() -> None:
    limiter = RateLimiter(Rate(burst=2, per_minute=6), max_keys=3)
    assert limiter.take("a", now=0) == 0
    assert limiter.take("a", now=0) == 0
    assert limiter.take("a", now=0) == pytest.approx(10.0)  # 6 a minute: one per 10 s
    assert limiter.take("a", now=5) == pytest.approx(5.0)
    assert limiter.take("a", now=10) == 0
    limiter.give_back("a", now=10)
    assert limiter.take("a", now=10) == 0
    for key in "bcd":
        limiter.take(key, now=10)
    assert len(limiter) <= 3  # bounded


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"burst": 0, "per_minute": 1}, "Rate.burst must be an int >= 1"),
        ({"burst": 1, "per_minute": 0}, "Rate.per_minute must be a positive finite number"),
    ],
)
def test_rate_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Rate(**kwargs)


# ---------------------------------------------------------------------------- the source


def counting(fn: Any) -> Any:
    """``fn`` with a call counter (``.calls``) and the threads it ran on (``.threads``)."""

    def wrapper() -> Any:
        wrapper.calls += 1  # type: ignore[attr-defined]
        wrapper.threads.append(threading.get_ident())  # type: ignore[attr-defined]
        return fn()

    wrapper.calls = 0  # type: ignore[attr-defined]
    wrapper.threads = []  # type: ignore[attr-defined]
    return wrapper


async def loop_lag_during(task: asyncio.Future[Any], probe_s: float = 0.3) -> float:
    """The worst delay of 10 ms sleeps on this loop while ``task`` runs."""
    worst = 0.0
    deadline = time.monotonic() + probe_s
    while time.monotonic() < deadline and not task.done():
        t0 = time.monotonic()
        await asyncio.sleep(0.01)
        worst = max(worst, time.monotonic() - t0 - 0.01)
    return worst


async def test_sync_function_runs_on_a_thread_and_the_loop_stays_free() -> None:
    release = threading.Event()

    def slow() -> dict[str, Any]:
        release.wait(10)
        return GOOD

    fn = counting(slow)
    source = RTCConfigurationSource(fn)
    task = asyncio.ensure_future(source.get(CLIENT, webrtc_id="abc"))
    await async_wait_until(lambda: fn.calls == 1, 5, "the function to be called")
    assert await loop_lag_during(task) < 0.2
    assert source.in_flight == 1
    release.set()
    assert await task == {"rtc_configuration": GOOD}
    assert fn.threads[0] != threading.get_ident()
    assert source.in_flight == 0


async def test_async_function_runs_on_its_own_loop() -> None:
    here = asyncio.get_running_loop()
    seen: list[asyncio.AbstractEventLoop] = []

    async def make() -> dict[str, Any]:
        seen.append(asyncio.get_running_loop())
        time.sleep(0.3)  # a careless async function that blocks its loop
        await asyncio.sleep(0)
        return GOOD

    source = RTCConfigurationSource(make)
    assert source.is_async
    task = asyncio.ensure_future(source.get(CLIENT))
    assert await loop_lag_during(task) < 0.2  # Gradio's loop is not the one blocked
    assert await task == {"rtc_configuration": GOOD}
    assert seen and seen[0] is not here


async def test_sync_function_returning_an_awaitable_is_awaited_off_the_loop() -> None:
    here = asyncio.get_running_loop()
    seen: list[asyncio.AbstractEventLoop] = []

    async def inner() -> dict[str, Any]:
        seen.append(asyncio.get_running_loop())
        return GOOD

    source = RTCConfigurationSource(lambda: inner())
    assert not source.is_async
    assert await source.get(CLIENT) == {"rtc_configuration": GOOD}
    assert seen[0] is not here


async def test_a_slow_function_times_out_and_keeps_its_slot_until_it_returns() -> None:
    release = threading.Event()
    source = RTCConfigurationSource(lambda: release.wait(10) and GOOD, timeout=0.3)
    t0 = time.monotonic()
    reply = await source.get(CLIENT)
    elapsed = time.monotonic() - t0
    assert reply["status"] == "failed"
    assert reply["meta"]["error"] == "rtc_configuration_failed"
    assert reply["meta"]["reason"] == "timeout"
    assert "within 0.3 s" in reply["meta"]["message"]
    assert 0.3 <= elapsed < 0.3 + 1.0 * TIMEOUT_SCALE
    assert source.in_flight == 1  # the thread is still in user code
    release.set()
    await async_wait_until(lambda: source.in_flight == 0, 5, "the late call to finish")


async def test_a_slow_async_function_is_cancelled() -> None:
    cancelled = threading.Event()

    async def forever() -> dict[str, Any]:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return GOOD

    source = RTCConfigurationSource(forever, timeout=0.2)
    reply = await source.get(CLIENT)
    assert reply["meta"]["reason"] == "timeout"
    await async_wait_until(cancelled.is_set, 5, "the async function to be cancelled")
    await async_wait_until(lambda: source.in_flight == 0, 5, "the slot to be freed")


async def test_errors_are_logged_with_an_id_and_hidden_from_the_browser(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("token hunter2 rejected")

    source = RTCConfigurationSource(broken)
    with caplog.at_level(logging.ERROR, logger="webrtc_ref.ice"):
        reply = await source.get(CLIENT, webrtc_id="abc")
    meta = reply["meta"]
    assert (meta["error"], meta["reason"]) == ("rtc_configuration_failed", "raised")
    assert "hunter2" not in meta["message"]
    error_id = meta["message"].split("error id ")[1].split(")")[0]
    record = next(r for r in caplog.records if error_id in r.getMessage())
    assert record.exc_info is not None and "hunter2" in str(record.exc_info[1])

    shown = await source.get(CLIENT, show_error=True)
    assert shown["meta"]["message"] == "RuntimeError: token hunter2 rejected"

    def refuses() -> dict[str, Any]:
        raise gr.Error("TURN is down for maintenance")

    reply = await RTCConfigurationSource(refuses).get(CLIENT)
    assert reply["meta"]["message"] == "TURN is down for maintenance"


async def test_a_timeout_error_of_the_function_is_its_own_error() -> None:
    """A socket timeout inside the function is reported as the function's error, not as
    the source's timeout."""

    def times_out() -> dict[str, Any]:
        raise TimeoutError("the provider did not answer")

    reply = await RTCConfigurationSource(times_out, timeout=5).get(CLIENT, show_error=True)
    assert reply["meta"]["reason"] == "raised"
    assert reply["meta"]["message"] == "TimeoutError: the provider did not answer"


async def test_an_unusable_result_is_refused_without_its_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    result = {"iceServers": [{"urls": "turn:x", "username": "u", "credential": 1234567}]}
    with caplog.at_level(logging.ERROR, logger="webrtc_ref.ice"):
        reply = await RTCConfigurationSource(lambda: result).get(CLIENT)
    meta = reply["meta"]
    assert (meta["error"], meta["reason"]) == ("rtc_configuration_failed", "invalid")
    assert "iceServers[0]['credential'] must be a string" in meta["message"]
    assert "1234567" not in meta["message"]
    assert "1234567" not in caplog.text
    assert "unusable configuration" in caplog.text


async def test_per_session_and_per_address_limits_stop_calls_before_the_function() -> None:
    fn = counting(lambda: GOOD)
    source = RTCConfigurationSource(
        fn, per_address=Rate(burst=3, per_minute=1), per_session=Rate(burst=1, per_minute=1)
    )
    a1 = Client(session="s1", address="10.0.0.1")
    assert "rtc_configuration" in await source.get(a1)
    again = await source.get(a1)
    assert again["meta"]["error"] == "too_many_requests"
    assert "this session" in again["meta"]["message"]
    assert 55 <= again["meta"]["retry_after"] <= 60
    # a session refusal takes nothing from its address: two more sessions get through
    for session in ("s2", "s3"):
        assert "rtc_configuration" in await source.get(Client(session=session, address="10.0.0.1"))
    blocked = await source.get(Client(session="s4", address="10.0.0.1"))
    assert blocked["meta"]["error"] == "too_many_requests"
    assert "this address" in blocked["meta"]["message"]
    assert "rtc_configuration" in await source.get(Client(session="s5", address="10.0.0.2"))
    assert fn.calls == 4
    assert source.refused == 2


async def test_calls_in_flight_are_capped_and_stuck_ones_count() -> None:
    release = threading.Event()
    fn = counting(lambda: release.wait(10) and GOOD)
    source = RTCConfigurationSource(
        fn, timeout=0.2, max_in_flight=2, per_address=None, per_session=None
    )
    replies = await asyncio.gather(source.get(CLIENT), source.get(CLIENT))
    assert [r["meta"]["reason"] for r in replies] == ["timeout", "timeout"]
    busy = await source.get(CLIENT)
    assert busy["meta"]["error"] == "too_many_requests"
    assert fn.calls == 2  # the stuck calls hold their slots: no third thread
    release.set()
    await async_wait_until(lambda: source.in_flight == 0, 5, "the stuck calls to return")
    assert "rtc_configuration" in await source.get(CLIENT)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be a positive number of seconds"),
        ({"max_in_flight": 0}, "max_in_flight must be an int >= 1"),
        ({"per_address": (1, 2)}, "per_address must be a webrtc_ref.ice.Rate or None"),
    ],
)
def test_source_options_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RTCConfigurationSource(lambda: GOOD, **kwargs)


# ---------------------------------------------------------------------------- component


def test_a_function_stays_out_of_props_and_config() -> None:
    fn = turn_rest_configuration("component-secret-xyz", "turn:127.0.0.1:1")
    w = WebRTC(rtc_configuration=fn)
    config = w.get_config()
    text = json.dumps(config, default=str)
    assert "component-secret-xyz" not in text
    assert "TurnRestConfiguration" not in text
    assert w.rtc_configuration is None
    assert config["props"]["rtc_configuration"] is None
    assert config["props"]["rtc_configuration_per_connection"] is True
    assert config["server_fns"] == ["ice_candidate", "offer", "rtc_config"]
    static = WebRTC(rtc_configuration=GOOD).get_config()["props"]
    assert static["rtc_configuration"] == GOOD
    assert static["rtc_configuration_per_connection"] is False


def test_function_forms() -> None:
    """No arguments, or only arguments with defaults (such as credential helpers taking
    optional keys and a ttl); a source is used as given; anything else is refused."""

    def helper(key_id: str | None = None, token: str | None = None, ttl: int = 600) -> Any:
        return GOOD

    async def async_helper(ttl: int = 600) -> Any:
        return GOOD

    source = RTCConfigurationSource(helper, timeout=1)
    assert WebRTC(rtc_configuration=source)._rtc_source is source
    assert WebRTC(rtc_configuration=async_helper)._rtc_source.is_async  # type: ignore[union-attr]
    assert WebRTC(rtc_configuration=helper)._rtc_source.fn is helper  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="rtc_configuration must be callable with no arguments"):
        WebRTC(rtc_configuration=lambda webrtc_id: GOOD)
    with pytest.raises(ValueError, match=r"^rtc_configuration must be a dict .* or a function"):
        WebRTC(rtc_configuration="turn:x")  # type: ignore[arg-type]


async def test_rtc_config_without_a_function_or_a_stream_is_not_configured() -> None:
    fn = counting(lambda: GOOD)
    static = WebRTC(rtc_configuration=GOOD)
    reply = await static.rtc_config({"webrtc_id": "x"})
    assert reply["meta"]["error"] == "not_configured"
    no_stream = WebRTC(rtc_configuration=fn)
    reply = await no_stream.rtc_config({"webrtc_id": "x"})
    assert reply["meta"]["error"] == "not_configured"
    assert fn.calls == 0


# ---------------------------------------------------------------------------- over HTTP


def echo(frame: np.ndarray) -> np.ndarray:
    return frame


@pytest.fixture
def app_with() -> Iterator[Any]:
    """Launch a video echo app with the given rtc_configuration; yields (url, component)."""
    launched_apps: list[Any] = []

    def make(rtc_configuration: Any, **options: Any) -> tuple[str, WebRTC]:
        with gr.Blocks() as demo:
            webrtc = WebRTC(rtc_configuration=rtc_configuration, **options)
            webrtc.stream(echo, inputs=[webrtc], outputs=[webrtc], concurrency_limit=None)
        context = launched(demo)
        url = context.__enter__()
        launched_apps.append(context)
        return url, webrtc

    yield make
    for context in launched_apps:
        context.__exit__(None, None, None)


async def test_the_function_is_called_once_per_request_over_http(app_with: Any) -> None:
    fn = counting(lambda: GOOD)
    url, webrtc = app_with(fn)
    http = GradioApp(url)
    try:
        for n in (1, 2, 3):
            reply = await http.server_fn(webrtc._id, "rtc_config", {"webrtc_id": f"id{n}"}, "s1")
            assert reply.status == 200
            assert reply.body == {"rtc_configuration": GOOD}
            assert fn.calls == n
        # the page and its config say only that the configuration is per connection
        entry = await http.component(webrtc._id)
        props = entry["props"]["props"]
        assert props.get("rtc_configuration") is None
        assert props["rtc_configuration_per_connection"] is True
        assert "rtc_config" in entry["props"]["server_fns"]
    finally:
        await http.aclose()


async def test_a_function_set_after_construction_is_used_per_connection() -> None:
    """set_rtc_configuration_function on a built component: the page's props say per
    connection and hold no configuration, and rtc_config calls the function."""
    fn = counting(lambda: GOOD)
    with gr.Blocks() as demo:
        webrtc = WebRTC(rtc_configuration={"iceServers": []})
        webrtc.stream(echo, inputs=[webrtc], outputs=[webrtc])
    with pytest.raises(ValueError, match="set_rtc_configuration_function takes a function"):
        webrtc.set_rtc_configuration_function({"iceServers": []})  # type: ignore[arg-type]
    webrtc.set_rtc_configuration_function(fn)
    with launched(demo) as url:
        http = GradioApp(url)
        try:
            props = (await http.component(webrtc._id))["props"]["props"]
            assert props.get("rtc_configuration") is None
            assert props["rtc_configuration_per_connection"] is True
            reply = await http.server_fn(webrtc._id, "rtc_config", {"webrtc_id": "a"}, "s1")
            assert reply.body == {"rtc_configuration": GOOD} and fn.calls == 1
        finally:
            await http.aclose()


async def test_no_credentials_are_minted_for_an_offer_that_would_be_refused(
    app_with: Any, closing: list[ClientPeer]
) -> None:
    """While the stream is full (concurrency_limit 1, one live connection) or draining,
    ``rtc_config`` replies as the offer would and the app's function is not called; the
    connection's own session may still get a configuration to supersede its pending one."""
    fn = counting(lambda: GOOD)
    with gr.Blocks() as demo:
        webrtc = WebRTC(rtc_configuration=fn)
        webrtc.stream(echo, inputs=[webrtc], outputs=[webrtc], concurrency_limit=1)
    with launched(demo) as url:
        http = GradioApp(url)
        try:
            reply = await http.server_fn(webrtc._id, "rtc_config", {"webrtc_id": "a1"}, "s1")
            assert reply.body == {"rtc_configuration": GOOD} and fn.calls == 1
            peer = ClientPeer(send=BarcodeVideoTrack(320, 240, fps=15), webrtc_id="a1")
            closing.append(peer)

            async def signal(body: dict[str, str]) -> Any:
                return (await http.server_fn(webrtc._id, "offer", body, "s1")).body

            assert (await peer.connect(signal)).get("type") == "answer"
            await peer.wait_connected(20)
            reply = await http.server_fn(webrtc._id, "rtc_config", {"webrtc_id": "b1"}, "s2")
            assert reply.body["meta"]["error"] == "concurrency_limit_reached", reply.body
            assert reply.body["meta"]["limit"] == 1
            assert fn.calls == 1
            await peer.close()
            stream_server = webrtc.stream_server
            assert stream_server is not None
            await async_wait_until(
                lambda: stream_server.stats().connections == 0, 10, "the slot to be freed"
            )
            reply = await http.server_fn(webrtc._id, "rtc_config", {"webrtc_id": "b2"}, "s2")
            assert reply.body == {"rtc_configuration": GOOD} and fn.calls == 2
            stream_server.start_drain()
            reply = await http.server_fn(webrtc._id, "rtc_config", {"webrtc_id": "b3"}, "s2")
            assert reply.body["meta"]["error"] == "server_draining", reply.body
            assert fn.calls == 2
        finally:
            await http.aclose()


# ---------------------------------------------------------------------------- coturn


@pytest.fixture(scope="module")
def turn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    try:
        with coturn(tmp_path_factory.mktemp("coturn")) as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))


async def allocate(server: Coturn, username: str, password: str) -> tuple[Any, tuple[str, int]]:
    """A TURN allocation with aioice's TURN client: (transport, relayed address)."""
    import aioice.turn

    transport, _ = await aioice.turn.create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", server.port), username, password
    )
    return transport, transport.get_extra_info("sockname")


def rest_credentials(server: Coturn, **kwargs: Any) -> tuple[str, str]:
    entry = turn_rest_credentials(server.secret, server.url, **kwargs)["iceServers"][0]
    return entry["username"], entry["credential"]


async def test_coturn_takes_fresh_credentials_and_refuses_expired_or_foreign_ones(
    turn: Coturn,
) -> None:
    import aioice.stun

    transport, relayed = await allocate(turn, *rest_credentials(turn, ttl=60, user="alice"))
    transport.close()
    assert relayed[0] == "127.0.0.1"
    transport, _ = await allocate(turn, *rest_credentials(turn, ttl=60))  # no user part
    transport.close()
    expired = rest_credentials(turn, ttl=60, user="alice", now=time.time() - 120)
    foreign = turn_rest_credentials("another-secret", turn.url, ttl=60)["iceServers"][0]
    for username, password in (expired, (foreign["username"], foreign["credential"])):
        with pytest.raises(aioice.stun.TransactionFailed) as info:
            await allocate(turn, username, password)
        assert info.value.response.attributes["ERROR-CODE"][0] == 401


@pytest.mark.slow
async def test_coturn_checks_the_expiry_when_allocating_only(turn: Coturn) -> None:
    """Why a short TTL is safe (docs/turn.md): an allocation made before the expiry is
    refreshed after it."""
    import aioice.stun

    # a TTL that outlasts a slow allocation on a loaded machine, yet expires within the test
    username, password = rest_credentials(turn, ttl=5, user="short")
    expiry = int(username.split(":")[0])
    transport, _ = await allocate(turn, username, password)
    try:
        await async_wait_until(lambda: time.time() > expiry + 1, 10, "the credentials to expire")
        protocol = transport._TurnTransport__inner_protocol
        refresh = aioice.stun.Message(
            message_method=aioice.stun.Method.REFRESH, message_class=aioice.stun.Class.REQUEST
        )
        refresh.attributes["LIFETIME"] = 600
        response, _ = await protocol.request_with_retry(refresh)
        assert response.attributes["LIFETIME"] == 600
    finally:
        transport.close()
    # That a new allocation with expired credentials is refused is shown with credentials
    # long expired (test_coturn_takes_fresh_credentials_and_refuses_expired_or_foreign_ones):
    # seconds after the expiry, coturn sometimes still accepts them.


def local_candidate_types(peer: ClientPeer) -> set[str]:
    transport = peer.pc.getTransceivers()[0].sender.transport.transport
    return {c.type for c in transport.iceGatherer.getLocalCandidates()}


def nominated_local_type(peer: ClientPeer) -> str:
    connection = peer.pc.getTransceivers()[0].sender.transport.transport._connection
    return str(connection._nominated[1].local_candidate.type)


@pytest.fixture
async def closing() -> AsyncIterator[list[ClientPeer]]:
    peers: list[ClientPeer] = []
    yield peers
    for peer in peers:
        await peer.close()


@pytest.mark.slow
async def test_relay_only_session_with_per_connection_credentials(
    turn: Coturn, app_with: Any, closing: list[ClientPeer]
) -> None:
    """An aiortc peer that may only use relay candidates connects through coturn with the
    credentials the app's function minted for it, once per connection, and gets its video
    back; the secret is nowhere in the page or its config."""
    fn = counting(
        turn_rest_configuration(
            turn.secret, turn.url, ttl=120, user="relay-test", ice_transport_policy="relay"
        )
    )
    url, webrtc = app_with(fn)
    http = GradioApp(url)
    try:
        page = (await http.http.get("/")).text
        config_text = json.dumps(await http.config())
        for text in (page, config_text):
            assert turn.secret not in text
        connect_times = []
        for n in (1, 2):
            webrtc_id = secrets.token_hex(8)
            reply = await http.server_fn(
                webrtc._id, "rtc_config", {"webrtc_id": webrtc_id}, f"session-{n}"
            )
            assert reply.status == 200, reply
            configuration = reply.body["rtc_configuration"]
            assert fn.calls == n
            entry = configuration["iceServers"][0]
            assert configuration["iceTransportPolicy"] == "relay"
            assert entry["username"].endswith(":relay-test")
            assert entry["credential"] == expected_credential(turn.secret, entry["username"])
            peer = ClientPeer(
                send=BarcodeVideoTrack(320, 240, fps=15),
                webrtc_id=webrtc_id,
                rtc_configuration=configuration,
            )
            closing.append(peer)

            async def signal(body: dict[str, str], session: str = f"session-{n}") -> Any:
                answer = await http.server_fn(webrtc._id, "offer", body, session)
                return answer.body

            t0 = time.monotonic()
            answer = await peer.connect(signal)
            assert answer.get("type") == "answer", answer
            assert local_candidate_types(peer) == {"relay"}
            await peer.wait_connected(20)
            connect_times.append(time.monotonic() - t0)
            assert nominated_local_type(peer) == "relay"
            remote = await peer.wait_remote(10)
            recorder = FrameRecorder(remote)  # type: ignore[arg-type]
            async with recorder:
                assert await recorder.wait_for(10, 15 * TIMEOUT_SCALE), recorder.records
            ids = recorder.ids()
            assert ids == sorted(ids), ids
        assert fn.calls == 2
        assert turn.secret not in (await http.http.get("/config")).text
        print(f"relay connect times (offer to connected): {connect_times}")
    finally:
        await http.aclose()
    log_text = turn.log_tail(200_000)
    assert "relay-test" in log_text, turn.log_tail()


def test_coturn_helper_keeps_the_secret_off_the_command_line(turn: Coturn) -> None:
    cmdline = Path(f"/proc/{turn.process.pid}/cmdline").read_bytes()
    assert turn.secret.encode() not in cmdline
