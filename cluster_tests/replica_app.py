"""The app every replica of the cluster tests serves: an audio echo that says where it runs.

Each connection echoes its microphone and, once a second, yields
``AdditionalOutputs(replica, webrtc_id, tag)``: the replica's name (``WEBRTC_REF_REPLICA``),
the connection's id and the current value of its ``tag`` textbox, shown as JSON in the
``where`` textbox. The browser stand-in reads it to check that its ticks (the tag) and
its outputs reach its own replica and its own connection.

With ``WEBRTC_REF_TURN_SECRET`` and ``WEBRTC_REF_TURN_URLS`` (comma-separated) in the
environment, every connection gets relay-only TURN REST credentials minted for it
(``turn_rest_configuration``); the secret stays in the replica.
"""

from __future__ import annotations

import collections
import json
import os
import time

import gradio as gr
import numpy as np

from webrtc_ref import (
    AdditionalOutputs,
    StreamHandler,
    WebRTC,
    get_current_context,
    turn_rest_configuration,
)
from webrtc_ref.cluster import REPLICA_ENV


class WhereEcho(StreamHandler):
    """Echo the audio; every second, an ``AdditionalOutputs`` naming replica, id and tag."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=50)
        self.next_report = 0.0

    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        self.queue.append(frame)

    def emit(self) -> tuple[int, np.ndarray] | AdditionalOutputs | None:
        now = time.monotonic()
        if now >= self.next_report:
            self.next_report = now + 1.0
            args = self.latest_args if isinstance(self.latest_args, list) else []
            tag = args[1] if len(args) > 1 else None
            return AdditionalOutputs(
                os.environ.get(REPLICA_ENV, "?"), get_current_context().webrtc_id, tag
            )
        return self.queue.popleft() if self.queue else None

    def copy(self) -> WhereEcho:
        return WhereEcho()


def build() -> gr.Blocks:
    secret = os.environ.get("WEBRTC_REF_TURN_SECRET")
    urls = [u for u in os.environ.get("WEBRTC_REF_TURN_URLS", "").split(",") if u]
    rtc_configuration = (
        turn_rest_configuration(secret, urls, ttl=600, user="cluster", ice_transport_policy="relay")
        if secret and urls
        else None
    )
    with gr.Blocks(title="cluster echo") as demo:
        audio = WebRTC(
            label="Echo",
            mode="send-receive",
            modality="audio",
            rtc_configuration=rtc_configuration,
        )
        tag = gr.Textbox(label="tag", value="")
        where = gr.Textbox(label="where")
        audio.stream(WhereEcho(), inputs=[audio, tag], outputs=[audio], concurrency_limit=None)
        audio.on_additional_outputs(
            lambda replica, webrtc_id, tag: json.dumps([replica, webrtc_id, tag]),
            outputs=[where],
        )
    return demo
