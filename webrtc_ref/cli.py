"""The ``webrtc-ref`` command line: run the demos (alone, or as replicas behind HAProxy),
print the version."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from webrtc_ref._version import __version__


def _parser() -> argparse.ArgumentParser:
    from webrtc_ref.demos import DEFAULT_DEMO, DEMOS

    parser = argparse.ArgumentParser(
        prog="webrtc-ref",
        description="webrtc_ref: reference implementation of the Gradio WebRTC component.",
    )
    parser.add_argument("--version", action="version", version=f"webrtc-ref {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    listing = "\n".join(f"  {name:<16} {demo.description}" for name, demo in DEMOS.items())
    demo = commands.add_parser(
        "demo",
        help="run a demo app (default: a page with one of each)",
        description=f"Run a demo app on http://HOST:PORT.\n\ndemos:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "name", nargs="?", default=DEFAULT_DEMO, help=f"which demo (default: {DEFAULT_DEMO})"
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=7860, help="port to bind (default 7860)")
    demo.add_argument("--list", action="store_true", help="list the demos and exit")
    cluster = commands.add_parser(
        "cluster",
        help="run replicas of a demo behind HAProxy on 127.0.0.1 (see docs/deployment.md)",
        description=(
            "Run N replicas of a demo (or module:function returning a gr.Blocks) behind "
            "HAProxy with cookie persistence, and a coturn every browser relays its media "
            "through (TURN REST credentials minted per connection, a random secret per "
            "run), all on 127.0.0.1, until Ctrl-C or SIGTERM. Needs Debian's haproxy and "
            "coturn."
        ),
    )
    cluster.add_argument(
        "app", nargs="?", default="echo-audio", help="a demo name or module:function"
    )
    cluster.add_argument("--replicas", type=int, default=2, help="how many (default 2)")
    cluster.add_argument("--port", type=int, default=7860, help="HAProxy's port (default 7860)")

    from webrtc_ref.standalone import STREAMS

    streams = "\n".join(f"  {name:<20} {entry[0]}" for name, entry in STREAMS.items())
    serve = commands.add_parser(
        "serve",
        help="serve a demo's Stream on FastAPI with a plain HTML page (no Gradio)",
        description=(
            "Mount a demo's Stream on a FastAPI app and serve it with a plain HTML page at "
            f"http://HOST:PORT/ using the standalone client (/client.js).\n\ndemos:\n{streams}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("name", nargs="?", help="which demo (see --list)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.add_argument("--list", action="store_true", help="list the demos and exit")
    return parser


def _cluster(app: str, replicas: int, port: int) -> int:
    """Run :class:`~webrtc_ref.cluster.Cluster` (HAProxy, ``replicas`` replicas of ``app``
    and a coturn the browsers relay through) until Ctrl-C or SIGTERM, then stop all of it."""
    import shutil
    import signal
    import threading

    from webrtc_ref.cluster import COTURN_HINT, HAPROXY_HINT, Cluster

    if replicas < 1:
        print(f"webrtc-ref: error: --replicas must be >= 1; got {replicas}", file=sys.stderr)
        return 2
    if not 0 < port < 65536:
        print(f"webrtc-ref: error: --port must be 1-65535; got {port}", file=sys.stderr)
        return 2
    for binary, hint in (("haproxy", HAPROXY_HINT), ("turnserver", COTURN_HINT)):
        if shutil.which(binary) is None:
            print(f"webrtc-ref: error: {hint}", file=sys.stderr)
            return 2
    stop = threading.Event()

    def on_sigterm(*_: object) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with Cluster(app, replicas=replicas, port=port, turn=True) as running:
            names = ", ".join(
                f"{m.name} on :{m.port} (pid {m.process.pid})" for m in running.members
            )
            assert running.turn_server is not None and running.balancer is not None
            print(f"webrtc-ref {__version__}: {app!r} x{replicas}: {names}")
            print(
                f"HAProxy (pid {running.balancer.pid}); media relayed by coturn at "
                f"{running.turn_server.url} (pid {running.turn_server.process.pid})"
            )
            print(f"Open {running.url}/ (Ctrl-C stops everything)", flush=True)
            stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("webrtc-ref: cluster stopped", flush=True)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from webrtc_ref.standalone import STREAMS, UnknownStreamError, serve

    if args.list or args.name is None:
        for name, (description, _) in STREAMS.items():
            print(f"{name:<20} {description}")
        return 0 if args.list else 2
    if not 0 < args.port < 65536:
        print(f"webrtc-ref: error: --port must be 1-65535; got {args.port}", file=sys.stderr)
        return 2
    if args.name not in STREAMS:
        print(f"webrtc-ref: error: {UnknownStreamError.for_name(args.name)}", file=sys.stderr)
        return 2
    print(f"webrtc-ref {__version__}: serving {args.name!r} on http://{args.host}:{args.port}/")
    serve(args.name, host=args.host, port=args.port)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``webrtc-ref``; returns the process exit code."""
    from webrtc_ref.demos import DEMOS, UnknownDemoError, build_demo

    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "cluster":
        return _cluster(args.app, args.replicas, args.port)
    if args.command == "demo":
        if args.list:
            for name, demo in DEMOS.items():
                print(f"{name:<16} {demo.description}")
            return 0
        try:
            app = build_demo(args.name)
        except UnknownDemoError as exc:
            print(f"webrtc-ref: error: {exc}", file=sys.stderr)
            return 2
        print(f"webrtc-ref {__version__}: demo {args.name!r} on http://{args.host}:{args.port}")
        app.launch(server_name=args.host, server_port=args.port, show_error=True)
        return 0
    if args.command == "serve":
        return _serve(args)
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse exits
    return 2
