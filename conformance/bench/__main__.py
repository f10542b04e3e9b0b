"""``python -m conformance.bench [reply-latency] [options]``.

Without a sub-command: the side-by-side benchmarks (:mod:`conformance.bench.run`,
``--help`` for its options). ``reply-latency``: webrtc_ref's ``ReplyOnPause`` decisions
replayed from the speech fixtures in simulated time (:mod:`conformance.bench.replay`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "reply-latency":
        from conformance.bench.replay import main as replay

        return replay(args[1:])
    from conformance.bench.run import main as run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
