"""Do at app build, in the background, what Gradio otherwise does on its first event.

Gradio runs every event (queued or not) inside ``gradio.utils.MatplotlibBackendMananger``,
whose first use imports ``matplotlib.pyplot`` (when matplotlib is installed): about 0.35 s
of imports on Gradio's server loop, holding the GIL. That loop also carries every
connection's media, so the first event after launch (the first ``tick`` of the first
stream) froze all audio and video for that long, and an echo's audio then kept the
backlog as latency. :func:`warm_up` makes that first use happen on a daemon thread when
``WebRTC.stream()`` builds the app, before any connection exists. Once per process; never
raises (what it cannot warm, Gradio does on its first event as before).
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("webrtc_ref.warmup")

_started = threading.Event()
#: Set once the warm-up has finished (whether or not there was anything to warm).
done = threading.Event()


def warm_up() -> None:
    """Start the warm-up thread (the first call only; returns at once)."""
    if _started.is_set():
        return
    _started.set()
    threading.Thread(target=_run, name="webrtc-ref-warm-up", daemon=True).start()


def _run() -> None:
    try:
        from gradio.utils import MatplotlibBackendMananger

        with MatplotlibBackendMananger():
            pass
    except Exception:  # an optional speed-up: Gradio does the same work later anyway
        log.debug("warming up Gradio's per-event matplotlib switch failed", exc_info=True)
    finally:
        done.set()
