"""HAProxy in front of three replicas of one app, on loopback (``webrtc_ref.cluster``).

Each simulated browser is the conformance suite's wire client (``conformance.wire``) with
an HTTP client of its own, so a cookie jar of its own: it loads the page first, as a
browser does, which gets it HAProxy's replica cookie, then offers, ticks and reads its
outputs through HAProxy while its media go straight to the replica. The replicas serve
``cluster_tests.replica_app``: an audio echo whose outputs name the replica, the
connection and the connection's current tag input.

- spread and routing: six browsers land 2/2/2; each browser's outputs come from the
  replica its cookie names, for its own connection, with its own tag (a changed tag shows
  in a later output), and it hears only its own tone;
- drain (SIGTERM): HAProxy sees the replica's agent say ``drain`` and sends it no new
  browsers; its live sessions keep their media, inputs and outputs; a new stream there
  gets ``server_draining``;
- a replica crash (SIGKILL): the other replicas' sessions keep their audio (no gap over
  250 ms); HAProxy marks the dead replica down; a browser whose cookie names it is sent
  to a survivor and streams there.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.adapters.base import Input, Scenario, Served, ServedStream
from conformance.gradio_http import GradioApp
from conformance.wire import Wire, WirePeer
from fixtures import analysis
from fixtures.tracks import ToneAudioTrack
from webrtc_ref.cluster import COOKIE, Cluster
from webrtc_ref.testing import TIMEOUT_SCALE, Coturn, async_wait_until, coturn

pytestmark = [pytest.mark.slow]

REPLICAS = 3
BROWSERS = 6
SCENARIO = Scenario(
    mode="send-receive",
    modality="audio",
    handler=lambda api: None,  # served by the replicas, not built here
    inputs=(Input("", "text"),),
    outputs=1,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir: Path = tmp_path_factory.mktemp("cluster")
    with Cluster("cluster_tests.replica_app:build", replicas=REPLICAS, workdir=workdir) as running:
        yield running


class Browser:
    """One simulated browser: its own cookie jar, one tab, one connection."""

    def __init__(self, url: str, index: int) -> None:
        self.index = index
        self.url = url
        self.app = GradioApp(url)
        self.wire: Wire | None = None
        self.peer: WirePeer | None = None
        self.tone_hz = 300.0 + 70.0 * index

    async def load_page(self) -> str:
        """GET / as a browser does first; the replica HAProxy pinned this browser to."""
        reply = await self.app.http.get("/")
        assert reply.status_code == 200, reply.status_code
        replica = self.app.http.cookies.get(COOKIE)
        assert replica, f"HAProxy set no {COOKIE} cookie: {dict(reply.headers)}"
        return str(replica)

    async def stream(self, tag: str, *, turn_url: str | None = None) -> WirePeer:
        """Offer and connect; with ``turn_url``, fetch this connection's minted TURN
        credentials first (through HAProxy, from its replica) and relay through the ICE
        server at ``turn_url`` only."""
        config = await self.app.config()
        by_label = {
            c.get("props", {}).get("label"): c["id"] for c in config["components"] if "id" in c
        }
        served = Served(
            url=self.url,
            scenario=SCENARIO,
            streams=[
                ServedStream(
                    webrtc=by_label["Echo"],
                    inputs=[by_label["tag"]],
                    input_kinds=["text"],
                    outputs=[by_label["where"]],
                    trigger=None,
                )
            ],
            periodic_ticks=False,
            tick_on_open=False,
        )
        self.wire = Wire(served)
        self.wire.app = self.app  # this browser's cookie jar for every request
        webrtc_id = secrets.token_hex(8)
        rtc_configuration = None
        if turn_url is not None:
            reply = await self.app.server_fn(
                by_label["Echo"], "rtc_config", {"webrtc_id": webrtc_id}, secrets.token_hex(6)
            )
            assert reply.status == 200 and isinstance(reply.body, dict), reply
            rtc_configuration = reply.body["rtc_configuration"]
            assert rtc_configuration["iceTransportPolicy"] == "relay", rtc_configuration
            servers = rtc_configuration["iceServers"]
            assert turn_url in [u for s in servers for u in _urls(s)], (turn_url, servers)
            rtc_configuration = {
                **rtc_configuration,
                "iceServers": [{**s, "urls": [turn_url]} for s in servers[:1]],
            }
            self.turn_username = servers[0]["username"]
        self.peer = self.wire.peer(
            send=ToneAudioTrack(self.tone_hz, 0.3),
            inputs=[tag],
            webrtc_id=webrtc_id,
            rtc_configuration=rtc_configuration,
        )
        await self.peer.connect_ok(20 if turn_url else 10)
        return self.peer

    def reports(self) -> list[list[Any]]:
        """Every ``[replica, webrtc_id, tag]`` the outputs showed, oldest first."""
        assert self.peer is not None
        return [u.values[0] for u in self.peer.outputs if u.values and u.values[0]]

    async def close(self) -> None:
        if self.peer is not None:
            await self.peer.close()
        await self.app.aclose()


def _urls(server: dict[str, Any]) -> list[str]:
    urls = server["urls"]
    return [urls] if isinstance(urls, str) else list(urls)


@pytest.fixture
def turn_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, list[Coturn]]]:
    """Two coturns sharing one TURN REST secret, and a cluster whose replicas mint
    relay-only credentials for both with it."""
    secret = secrets.token_urlsafe(24)
    with contextlib.ExitStack() as stack:
        turns = [stack.enter_context(coturn(tmp_path / f"turn{i}", secret=secret)) for i in (1, 2)]
        running = stack.enter_context(
            Cluster(
                "cluster_tests.replica_app:build",
                replicas=REPLICAS,
                workdir=tmp_path / "cluster",
                env={
                    "WEBRTC_REF_TURN_SECRET": secret,
                    "WEBRTC_REF_TURN_URLS": ",".join(t.url for t in turns),
                },
            )
        )
        yield running, turns


@pytest.fixture
def crash_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own for the crash test (it kills a replica)."""
    with Cluster(
        "cluster_tests.replica_app:build", replicas=REPLICAS, workdir=tmp_path / "cluster"
    ) as running:
        yield running


@contextlib.asynccontextmanager
async def opened_browsers(url: str) -> AsyncIterator[list[Browser]]:
    opened = [Browser(url, i) for i in range(BROWSERS)]
    try:
        yield opened
    finally:
        await asyncio.gather(*(b.close() for b in opened), return_exceptions=True)


async def wait_report(browser: Browser, predicate: Any, what: str, timeout: float = 10) -> Any:
    await async_wait_until(
        lambda: any(predicate(r) for r in browser.reports()), timeout, f"{what} ({browser.index})"
    )
    return next(r for r in reversed(browser.reports()) if predicate(r))


def heard_hz(peer: WirePeer, seconds: float = 0.5) -> float:
    recorder = peer.recorders["audio"]
    rate = recorder.sample_rate
    samples = recorder.samples()[-int(seconds * rate) :]
    assert analysis.level_dbfs(samples) > -30, "the echo is silent"
    return float(analysis.dominant_frequency(samples, rate))


def largest_gap_after(peer: WirePeer, since: float) -> float:
    arrivals = [arrival for _, _, arrival in peer.recorders["audio"].frames if arrival >= since]
    assert len(arrivals) > 10, "no audio arrived"
    return max(b - a for a, b in itertools.pairwise(arrivals))


async def test_spread_routing_and_isolation(cluster: Cluster) -> None:
    """Six browsers land 2/2/2; ticks and outputs reach each browser's own replica and
    connection; each hears only its own tone."""
    async with opened_browsers(cluster.url) as browsers:
        await check_spread_routing_and_isolation(cluster, browsers)


async def check_spread_routing_and_isolation(cluster: Cluster, browsers: list[Browser]) -> None:
    pinned = [await b.load_page() for b in browsers]
    assert collections.Counter(pinned) == {m.name: 2 for m in cluster.members}, pinned
    # Every later request of a browser keeps its replica.
    for browser, replica in zip(browsers, pinned, strict=True):
        assert await browser.load_page() == replica
    peers = await asyncio.gather(*(b.stream(f"tag-{b.index}") for b in browsers))

    for browser, replica, peer in zip(browsers, pinned, peers, strict=True):
        report = await wait_report(
            browser, lambda r, i=browser.index: r[2] == f"tag-{i}", "an output with its tag"
        )
        assert report == [replica, peer.webrtc_id, f"tag-{browser.index}"], report
    # A changed tag reaches the right connection: the next outputs carry it.
    for browser in browsers:
        assert browser.peer is not None
        await browser.peer.set_inputs([f"new-{browser.index}"])
    for browser, replica, peer in zip(browsers, pinned, peers, strict=True):
        report = await wait_report(
            browser, lambda r, i=browser.index: r[2] == f"new-{i}", "an output with the new tag"
        )
        assert report == [replica, peer.webrtc_id, f"new-{browser.index}"], report
        mixed = [r for r in browser.reports() if r[1] != peer.webrtc_id or r[0] != replica]
        assert not mixed, mixed
    for browser, peer in zip(browsers, peers, strict=True):
        await peer.recorders["audio"].wait_for_samples(48000, 10 * TIMEOUT_SCALE)
        assert abs(heard_hz(peer) - browser.tone_hz) < 10, (browser.index, heard_hz(peer))


async def test_replica_crash(crash_cluster: Cluster) -> None:
    """SIGKILL one replica: the others' sessions keep their audio, HAProxy marks it down,
    and a browser pinned to it is sent to a survivor, where it streams."""
    async with opened_browsers(crash_cluster.url) as browsers:
        await check_replica_crash(crash_cluster, browsers)


async def check_replica_crash(cluster: Cluster, browsers: list[Browser]) -> None:
    pinned = [await b.load_page() for b in browsers]
    peers = await asyncio.gather(*(b.stream(f"tag-{b.index}") for b in browsers))
    for peer in peers:
        assert await peer.recorders["audio"].wait_for_samples(24000, 10 * TIMEOUT_SCALE)
    victim = pinned[0]
    killed_at = time.time()
    cluster.kill(victim)

    await async_wait_until(
        lambda: cluster.server_states().get(victim, "").startswith("DOWN"),
        10,
        f"HAProxy to mark {victim} down",
    )
    survivors = [(b, p) for b, p, r in zip(browsers, peers, pinned, strict=True) if r != victim]
    assert len(survivors) == BROWSERS - BROWSERS // REPLICAS
    for browser, peer in survivors:
        await async_wait_until(
            lambda p=peer: p.recorders["audio"].frames[-1][2] > killed_at + 2,
            10,
            "audio 2 s after the crash",
        )
        gap = largest_gap_after(peer, killed_at)
        assert gap < 0.25, (browser.index, gap)
        assert abs(heard_hz(peer) - browser.tone_hz) < 10

    # The dead replica's browser: its cookie names the dead replica; the next page load
    # lands on a survivor (redispatch) and it streams there.
    orphan = browsers[0]
    assert orphan.peer is not None
    await orphan.peer.close()
    moved_to = await orphan.load_page()
    assert moved_to != victim and moved_to in {m.name for m in cluster.members}, moved_to
    peer = await orphan.stream("after-crash")
    report = await wait_report(orphan, lambda r: r[2] == "after-crash", "an output after moving")
    assert report == [moved_to, peer.webrtc_id, "after-crash"], report
    await peer.recorders["audio"].wait_for_samples(24000, 10 * TIMEOUT_SCALE)
    assert abs(heard_hz(peer, 0.3) - orphan.tone_hz) < 10


def nominated_local_type(peer: WirePeer) -> str:
    transport = peer.pc.getTransceivers()[0].sender.transport.transport
    return str(transport._connection._nominated[1].local_candidate.type)


async def test_turn_rest_relay_through_either_coturn(
    turn_cluster: tuple[Cluster, list[Coturn]],
) -> None:
    """Every session relays through coturn with credentials its replica minted for it;
    credentials minted on any replica work on either coturn (one shared secret), and the
    secret is nowhere in what a browser gets."""
    cluster, turns = turn_cluster
    async with opened_browsers(cluster.url) as browsers:
        pinned = [await b.load_page() for b in browsers]
        peers = []
        for browser in browsers:
            turn = turns[browser.index % 2]
            peers.append(await browser.stream(f"tag-{browser.index}", turn_url=turn.url))
        for browser, replica, peer in zip(browsers, pinned, peers, strict=True):
            assert nominated_local_type(peer) == "relay"
            report = await wait_report(
                browser, lambda r, i=browser.index: r[2] == f"tag-{i}", "an output with its tag"
            )
            assert report == [replica, peer.webrtc_id, f"tag-{browser.index}"], report
            await peer.recorders["audio"].wait_for_samples(24000, 10 * TIMEOUT_SCALE)
            assert abs(heard_hz(peer, 0.3) - browser.tone_hz) < 10
            page = (await browser.app.http.get("/")).text + (
                await browser.app.http.get("/config")
            ).text
            assert turns[0].secret not in page
        # Each coturn served the sessions sent to it, whichever replica minted them.
        for i, turn in enumerate(turns):
            log = turn.log_tail(500_000)
            for browser in browsers:
                if browser.index % 2 == i:
                    assert browser.turn_username in log, (i, browser.turn_username)


@pytest.fixture
def drain_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own for the drain test, with a long drain grace."""
    with Cluster(
        "cluster_tests.replica_app:build",
        replicas=REPLICAS,
        workdir=tmp_path / "cluster",
        env={"WEBRTC_REF_DRAIN_GRACE": "60"},
    ) as running:
        yield running


async def test_a_draining_replica_keeps_its_sessions_and_gets_no_new_browsers(
    drain_cluster: Cluster,
) -> None:
    """SIGTERM one replica: its agent says ``drain``, so HAProxy sends it no new browsers
    while the browsers pinned to it still reach it; its live sessions keep their media,
    inputs and outputs; a new stream there is refused with ``server_draining``."""
    cluster = drain_cluster
    async with opened_browsers(cluster.url) as browsers:
        pinned = [await b.load_page() for b in browsers]
        peers = await asyncio.gather(*(b.stream(f"tag-{b.index}") for b in browsers))
        for peer in peers:
            assert await peer.recorders["audio"].wait_for_samples(24000, 10 * TIMEOUT_SCALE)
        victim = pinned[0]
        drained_at = time.time()
        cluster.drain(victim)
        await async_wait_until(
            lambda: cluster.server_states().get(victim, "").startswith("DRAIN"),
            10,
            f"HAProxy to see {victim} draining",
        )
        staying = [(b, p) for b, p, r in zip(browsers, peers, pinned, strict=True) if r == victim]
        assert len(staying) == BROWSERS // REPLICAS
        for browser, peer in staying:
            await peer.set_inputs([f"drain-{browser.index}"])
            report = await wait_report(
                browser,
                lambda r, i=browser.index: r[2] == f"drain-{i}",
                "a changed tag on the draining replica",
            )
            assert report == [victim, peer.webrtc_id, f"drain-{browser.index}"], report
            await async_wait_until(
                lambda p=peer: p.recorders["audio"].frames[-1][2] > drained_at + 2,
                10,
                "audio 2 s into the drain",
            )
            assert largest_gap_after(peer, drained_at) < 0.25
        # A browser pinned to the draining replica starting another stream is refused.
        browser, _ = staying[0]
        assert browser.wire is not None
        extra = browser.wire.peer(send=ToneAudioTrack(500.0, 0.3), inputs=["late"])
        reply = await extra.connect()
        assert isinstance(reply.body, dict), reply.body
        assert reply.body.get("meta", {}).get("error") == "server_draining", reply.body
        await extra.close()
        # New browsers land on the other replicas only.
        async with opened_browsers(cluster.url) as newcomers:
            landed = [await b.load_page() for b in newcomers]
        assert victim not in landed, landed
        assert cluster.replica(victim).process.poll() is None  # still serving its sessions


def test_configuration_refuses_what_cannot_route() -> None:
    """No replicas, a name twice, or a replica count below one are refused up front."""
    from webrtc_ref.cluster import haproxy_config, load_app

    with pytest.raises(ValueError, match="at least one"):
        haproxy_config(8000, [])
    with pytest.raises(ValueError, match="unique"):
        haproxy_config(8000, [("r1", 8001), ("r1", 8002)])
    with pytest.raises(ValueError, match="replicas must be an int >= 1; got 0"):
        Cluster("echo-audio", replicas=0)
    with pytest.raises(ValueError, match=r"demo name .* or module:function; got 'nope'"):
        load_app("nope")
    config = haproxy_config(8000, [("r1", 8001), ("r2", 8002)])
    assert f"cookie {COOKIE} insert indirect nocache" in config
    assert "server r2 127.0.0.1:8002 cookie r2 check" in config
    assert "option redispatch" in config
    with pytest.raises(ValueError, match="1 agent ports for 2 replicas"):
        haproxy_config(8000, [("r1", 8001), ("r2", 8002)], agent_ports=[9001])
    with_agents = haproxy_config(8000, [("r1", 8001), ("r2", 8002)], agent_ports=[9001, 9002])
    assert "cookie r2 check agent-check agent-port 9002 agent-inter 1s" in with_agents
