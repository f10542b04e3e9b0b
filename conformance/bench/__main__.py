"""``python -m conformance.bench``: see :mod:`conformance.bench.run`."""

from __future__ import annotations

import sys

from conformance.bench.run import main

if __name__ == "__main__":
    sys.exit(main())
