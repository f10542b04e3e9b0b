"""The ``webrtc-ref`` command line: run the demos, print the version."""

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
