"""A Gradio app for the lifecycle tests, run in a subprocess of its own.

``python -m webrtc_ref.tests.lifecycle_app --port PORT --markers DIR [--kind KIND]``
serves the guide's EchoHandler (audio send-receive, no concurrency limit) on 127.0.0.1
with ``demo.launch()`` blocking, as an app's script does. Each handler copy writes the
file ``DIR/shutdown-<webrtc_id>`` when its ``shutdown()`` runs. A connection whose
``webrtc_id`` starts with ``<kind>-`` (see :data:`KINDS`) gets an ``emit`` that blocks on
another primitive, each unblocked by ``shutdown()`` as docs/handlers.md says, or (kind
``raises``) a ``receive`` that raises after half a second. The app prints
``READY <url>`` once it serves.
Diagnostics: the hidden ``probe`` button's click event (``queue=False``) answers with the
process's own view of itself (:func:`probe`).
"""

from __future__ import annotations

import argparse
import gc
import os
import queue
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("queue", "nested_queue", "simple_queue", "event", "condition", "socket", "raises")


def _handler_class(default_kind: str, markers: Path) -> type:
    from webrtc_ref import StreamHandler

    class Echo(StreamHandler):
        """The guide's echo; ``emit`` blocks on the primitive of ``kind``."""

        def __init__(self) -> None:
            super().__init__()
            self._kind: str | None = None
            self.queue: queue.Queue[Any] = queue.Queue()
            self.nested = {"q": queue.Queue()}
            self.simple: queue.SimpleQueue[Any] = queue.SimpleQueue()
            self.frames: list[Any] = []
            self.event = threading.Event()
            self.cond = threading.Condition()
            self.pair = socket.socketpair()
            self.received = 0

        @property
        def kind(self) -> str:
            if self._kind is None:
                prefix = (self.webrtc_id or "").split("-", 1)[0]
                self._kind = prefix if prefix in KINDS else default_kind
            return self._kind

        def receive(self, frame: tuple[int, np.ndarray]) -> None:
            self.received += 1
            if self.kind == "raises" and self.received == 25:
                raise RuntimeError("the handler failed on purpose")
            if self.kind in ("queue", "raises"):
                self.queue.put(frame)
            elif self.kind == "nested_queue":
                self.nested["q"].put(frame)
            elif self.kind == "simple_queue":
                self.simple.put(frame)
            elif self.kind in ("event", "condition", "socket"):
                with self.cond:
                    self.frames.append(frame)
                    self.cond.notify()
                self.event.set()
                if self.kind == "socket":
                    self.pair[1].send(b"x")

        def emit(self) -> Any:
            if self.kind in ("queue", "raises"):
                return self.queue.get()
            if self.kind == "nested_queue":
                return self.nested["q"].get()
            if self.kind == "simple_queue":
                return self.simple.get()
            if self.kind == "event":
                self.event.wait()
                self.event.clear()
            elif self.kind == "condition":
                with self.cond:
                    self.cond.wait_for(lambda: self.frames or self.event.is_set())
            elif self.kind == "socket":
                try:
                    if not self.pair[0].recv(1):
                        return None
                except OSError:  # closed by shutdown()
                    return None
            with self.cond:
                return self.frames.pop(0) if self.frames else None

        def copy(self) -> Echo:
            return Echo()

        def shutdown(self) -> None:
            # unblock emit, whatever it waits on (the worker contract)
            self.nested["q"].put(None)
            self.event.set()
            with self.cond:
                self.cond.notify_all()
            self.pair[1].close()
            self.pair[0].close()
            if self.webrtc_id is not None:
                (markers / f"shutdown-{self.webrtc_id}").write_text(str(time.time()))

    return Echo


def probe(server: Any) -> dict[str, Any]:
    """This process's own view: OS threads, open fds, UDP sockets, live peer connections,
    RSS, and the stream's stats. No garbage collection is forced first."""
    from aiortc import RTCPeerConnection

    status = Path("/proc/self/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    fds = os.listdir("/proc/self/fd")
    udp = 0
    inodes = set()
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for table in ("/proc/self/net/udp", "/proc/self/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        udp += sum(1 for line in lines if line.split()[9] in inodes)
    peers = sum(isinstance(o, RTCPeerConnection) for o in gc.get_objects())
    names: dict[str, int] = {}
    for task in os.listdir("/proc/self/task"):
        try:
            name = Path(f"/proc/self/task/{task}/comm").read_text().strip()
        except OSError:
            continue
        names[name] = names.get(name, 0) + 1
    stats = server.stats()
    return {
        "threads": int(fields["Threads"].strip()),
        "fds": len(fds),
        "udp": udp,
        "peer_connections": peers,
        "rss_kb": int(fields["VmRSS"].strip().split()[0]),
        "connections": stats.connections,
        "leftovers": stats.leftover_connections,
        "stuck_workers": stats.stuck_workers,
        "closed_total": stats.closed_total,
        "draining": stats.draining,
        "os_thread_names": names,
        "python_threads": sorted(t.name for t in threading.enumerate()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--markers", type=Path, required=True)
    parser.add_argument("--kind", choices=KINDS, default="queue")
    args = parser.parse_args(argv)

    import gradio as gr

    from webrtc_ref import WebRTC
    from webrtc_ref.testing import loopback_ice

    with loopback_ice():
        with gr.Blocks() as demo:
            webrtc = WebRTC(mode="send-receive", modality="audio")
            webrtc.stream(
                _handler_class(args.kind, args.markers)(),
                inputs=[webrtc],
                outputs=[webrtc],
                concurrency_limit=None,
            )
            report = gr.JSON(visible=False)
            gr.Button("probe", visible=False).click(
                lambda: probe(webrtc.stream_server), outputs=report, queue=False
            )
        demo.launch(
            server_name="127.0.0.1", server_port=args.port, quiet=True, prevent_thread_lock=True
        )
        print(f"READY http://127.0.0.1:{args.port}", flush=True)
        demo.block_thread()  # what launch() does when it blocks: Ctrl-C closes the server
    print("EXITED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
