"""``python -m webrtc_ref`` is the ``webrtc-ref`` command."""

from webrtc_ref.cli import main

raise SystemExit(main())
