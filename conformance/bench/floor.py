"""The floor's server process: bare aiortc peers, and webrtc_ref's core, behind HTTP.

The benchmark's floor (:class:`conformance.bench.run.FloorTarget`) and the webrtc_ref core
row of the CPU figure run here, outside Gradio, in a process of their own so that their CPU
is measured alone. Run as ``python -m conformance.bench.floor --port PORT`` (the driver does
this with :class:`ServerProcess`); every aiortc peer in it gathers ICE on 127.0.0.1 only.

Routes (a small Starlette app served by uvicorn on 127.0.0.1, pure-asyncio loop):

- ``POST /offer/{kind}``: the offer body ``{"sdp", "type", "webrtc_id"}``; returns the reply
  plus ``server_answer_s`` (offer received -> answer ready, ICE gathered). Kinds:

  * ``bare-echo``: the floor, a plain ``RTCPeerConnection`` whose ``on("track")`` does
    ``pc.addTrack(track)`` (aiortc decodes and re-encodes; no component); audio or video;
  * ``bare-tight``: ``bare-echo`` with each decoded frame copied into a fresh, tightly
    sized ``av.AudioFrame`` before it is sent back. aiortc's decoder returns frames whose
    buffer is sized for 120 ms (23040 bytes for 20 ms of audio), and its sender computes the
    RTP audio level in pure Python over the *whole buffer*, six times the real samples; the
    copy removes that cost, which an implementation building its own 20 ms frames never
    pays. The CPU figure's echo target is against this floor;
  * ``bare-sink``: the idle floor, a plain peer that reads and discards the audio;
  * ``ref-echo``: webrtc_ref's ``StreamServer`` (send-receive, audio) with the user guide's
    ``EchoHandler``, no Gradio: the core row of the CPU figure;
  * ``ref-idle``: ``StreamServer`` with a handler that takes audio and whose ``emit``
    returns ``None``.

- ``GET /cpu``: ``{"cpu_s", "wall_s", "threads", "connections"}``; ``cpu_s`` is
  ``time.process_time()`` (every thread of this process).
- ``POST /reset``: close every peer of every kind; returns how many were open.

The process exits on its own when its parent dies or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from webrtc_ref.demos.echo_audio import EchoHandler  # the user guide's, verbatim
from webrtc_ref.handlers import StreamHandler

KINDS: tuple[str, ...] = ("bare-echo", "bare-tight", "bare-sink", "ref-echo", "ref-idle")


class IdleHandler(StreamHandler):
    """Takes every input block and never has anything to say."""

    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        pass

    def emit(self) -> None:
        return None

    def copy(self) -> StreamHandler:
        return IdleHandler()


def _tight(source: Any) -> Any:
    """A track re-wrapping each frame of ``source`` in a buffer of its real size."""
    import av
    from aiortc.mediastreams import MediaStreamTrack

    class TightAudio(MediaStreamTrack):
        kind = "audio"

        async def recv(self) -> av.AudioFrame:
            frame = await source.recv()
            copy = av.AudioFrame.from_ndarray(
                frame.to_ndarray(), format=frame.format.name, layout=frame.layout.name
            )
            copy.sample_rate, copy.pts, copy.time_base = (
                frame.sample_rate,
                frame.pts,
                frame.time_base,
            )
            return copy

    return TightAudio()


class BarePeers:
    """Plain aiortc answerers: ``echo`` sends the received track back (``"tight"``: through
    :func:`_tight`); ``echo=False`` reads it and discards it."""

    def __init__(self, echo: bool | str) -> None:
        self.echo = echo
        self.pcs: set[Any] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def offer(self, body: dict[str, Any]) -> dict[str, Any]:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.add(pc)

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video":  # the video floor: aiortc decodes and re-encodes it
                if self.echo:
                    pc.addTrack(track)
                return
            if self.echo == "tight":
                pc.addTrack(_tight(track))
            elif self.echo:
                pc.addTrack(track)
            else:
                task = asyncio.ensure_future(self._drain(track))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._close(pc)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return {"sdp": pc.localDescription.sdp, "type": "answer"}

    @staticmethod
    async def _drain(track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    async def _close(self, pc: Any) -> None:
        self.pcs.discard(pc)
        await pc.close()

    async def shutdown(self) -> int:
        pcs = list(self.pcs)
        await asyncio.gather(*(self._close(pc) for pc in pcs), return_exceptions=True)
        return len(pcs)


def build_app() -> Any:
    """The Starlette app serving every kind of peer (see the module docstring)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from webrtc_ref.server import StreamServer

    ref = {
        "ref-echo": StreamServer(
            mode="send-receive", modality="audio", handler=EchoHandler(), concurrency_limit=None
        ),
        "ref-idle": StreamServer(
            mode="send-receive", modality="audio", handler=IdleHandler(), concurrency_limit=None
        ),
    }
    bare = {
        "bare-echo": BarePeers(echo=True),
        "bare-tight": BarePeers(echo="tight"),
        "bare-sink": BarePeers(echo=False),
    }

    def counts() -> dict[str, int]:
        out = {kind: len(server) for kind, server in ref.items()}
        out.update({kind: len(peers.pcs) for kind, peers in bare.items()})
        return out

    async def offer(request: Request) -> JSONResponse:
        kind = request.path_params["kind"]
        body = await request.json()
        start = time.perf_counter()
        if kind in ref:
            reply = await ref[kind].offer(body)
        elif kind in bare:
            reply = await bare[kind].offer(body)
        else:
            return JSONResponse({"error": f"unknown kind {kind!r}"}, status_code=404)
        reply["server_answer_s"] = time.perf_counter() - start
        return JSONResponse(reply)

    async def cpu(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "cpu_s": time.process_time(),
                "wall_s": time.monotonic(),
                "threads": threading.active_count(),
                "connections": counts(),
            }
        )

    async def reset(request: Request) -> JSONResponse:
        before = counts()
        # close the core's connections without StreamServer.shutdown(), which would refuse
        # every later offer
        connections = [c for server in ref.values() for c in server.connections]
        await asyncio.gather(*(c.close("server_shutdown") for c in connections))
        await asyncio.gather(*(peers.shutdown() for peers in bare.values()))
        return JSONResponse({"closed": before, "threads": threading.active_count()})

    return Starlette(
        routes=[
            Route("/offer/{kind}", offer, methods=["POST"]),
            Route("/cpu", cpu, methods=["GET"]),
            Route("/reset", reset, methods=["POST"]),
        ]
    )


async def _watchdog(parent: int, max_seconds: float) -> None:
    """Exit when the parent process is gone or the time budget is spent."""
    deadline = time.monotonic() + max_seconds
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent or time.monotonic() > deadline:
            os._exit(3)


def serve(port: int, max_seconds: float) -> None:
    """Serve :func:`build_app` on 127.0.0.1:``port`` until killed (ICE on loopback only)."""
    import uvicorn

    from webrtc_ref.testing import loopback_ice

    logging.basicConfig(level=logging.WARNING)
    parent = os.getppid()
    with loopback_ice():
        config = uvicorn.Config(
            build_app(),
            host="127.0.0.1",
            port=port,
            loop="asyncio",
            lifespan="off",
            log_level="warning",
            access_log=False,
        )
        server = uvicorn.Server(config)

        async def main() -> None:
            watchdog = asyncio.ensure_future(_watchdog(parent, max_seconds))
            try:
                await server.serve()
            finally:
                watchdog.cancel()

        asyncio.run(main())


class ServerProcess:
    """Starts the server in a child process; a context manager that always kills it."""

    def __init__(self, max_seconds: float = 900.0) -> None:
        from webrtc_ref.testing import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.max_seconds = max_seconds
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        import httpx

        cmd = [
            sys.executable,
            "-m",
            "conformance.bench.floor",
            "--port",
            str(self.port),
            "--max-seconds",
            str(self.max_seconds),
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the floor server exited with code {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/cpu", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the floor server did not answer within {timeout:g} s")
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args(argv)
    serve(args.port, args.max_seconds)


if __name__ == "__main__":
    main()
