"""``python -m webrtc_ref.bench [<benchmark> [options]]``: one benchmark, or all of them."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


def _reply_latency(argv: Sequence[str]) -> int:
    from webrtc_ref.bench.reply_latency import main

    return main(argv)


def _echo(argv: Sequence[str]) -> int:
    from webrtc_ref.bench.echo import main

    return main(list(argv))


BENCHMARKS: dict[str, Callable[[Sequence[str]], int]] = {
    "reply-latency": _reply_latency,
    "echo": _echo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:  # everything, with each benchmark's defaults
        return max(run([]) for run in BENCHMARKS.values())
    if args[0] not in BENCHMARKS:
        names = ", ".join(BENCHMARKS)
        print(f"usage: python -m webrtc_ref.bench {{{names}}} [options]", file=sys.stderr)
        return 2
    return BENCHMARKS[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
