"""The sessions the tests record (plans), shared by several test modules.

- audio: the guide's EchoHandler, a recording handler, receive-mode generators at several
  rates and layouts, send mode;
- reply on pause: ReplyOnPause on espeak-ng speech: two turns, extra inputs, send mode
  with AdditionalOutputs, no speech, hesitations. Each is real time (5-10 s).

``conformance/tests/conftest.py`` records them (session-scoped, concurrently).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from conformance.adapters import Api, Input, Scenario
from conformance.helpers import Probe, echo_handler, recording_handler, tone
from conformance.recording import Plan
from conformance.wire import Wire, eventually

#: The echo session sends this much 440 Hz tone, then silence.
ECHO_TONE_S = 2.0
#: A receive-mode chunk: (rate, tone frequency (0: silence), form, dtype, seconds). Form
#: "pair" yields (rate, array), "mono"/"stereo" yields (rate, array, form).
Chunk = tuple[int, float, str, str, float]
CHUNK_S = 0.4
#: The "generator" session. Silence follows each tone before a format change and at the
#: end, so that a resampler holding back its tail (AUD-013) or dropping chunks after a
#: format change (AUD-012) does not also fail the requirements about forms and order.
GENERATOR_CHUNKS: tuple[Chunk, ...] = (
    (24000, 500.0, "pair", "int16", CHUNK_S),
    (24000, 1000.0, "mono", "int16", CHUNK_S),
    (24000, 0.0, "pair", "int16", 0.2),
    (16000, 1500.0, "pair", "int16", CHUNK_S),
    (48000, 2000.0, "pair", "float32", CHUNK_S),
    (48000, 0.0, "pair", "float32", 0.2),
)
RATES = (16000, 24000, 48000)


def _chunk(rate: int, freq: float, form: str, dtype: str, seconds: float) -> Any:
    array = tone(freq, seconds, rate)
    if dtype == "float32":
        array = (array.astype(np.float32) / 32768).astype(np.float32)
    if form == "pair":
        return (rate, array)
    return (rate, array, form)


async def _until_ended(peer: Any, timeout: float) -> None:
    """Wait until the stream ended (end_stream, closed connection, or ended remote track)."""
    await eventually(
        lambda: peer.ended or (peer.recorder is not None and peer.recorder.ended), timeout
    )


# -- audio ------------------------------------------------------------------------------------


def _echo_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        return Scenario("send-receive", "audio", echo_handler)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        from fixtures.tracks import ArrayAudioTrack

        samples = tone(440.0, ECHO_TONE_S, 48000)[0]
        peer = wire.peer(send=ArrayAudioTrack(samples, 48000, on_end="silence"))
        await peer.connect_ok()
        recorder = await peer.wait_remote()
        await recorder.wait_for_samples(int(48000 * (ECHO_TONE_S + 0.8)), 6.0)
        await peer.close()
        return {}

    return Plan(scenario, script)


def _receiver_plan() -> Plan:
    """A recording handler that answers each received block with 20 ms of a 700 Hz tone."""

    def emit(handler: Any) -> Any:
        try:
            handler.queue.get_nowait()
        except Exception:
            handler.probe_none = getattr(handler, "probe_none", 0) + 1
            return None
        n = getattr(handler, "n", 0)
        handler.n = n + 480
        t = (n + np.arange(480)) / 24000
        chunk = np.rint(0.5 * 32767 * np.sin(2 * np.pi * 700.0 * t)).astype(np.int16)
        return (24000, chunk[None, :])

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            def counting_emit(h: Any) -> Any:
                result = emit(h)
                if result is None:
                    probe.bump("emit_none")
                return result

            # 20 ms output frames: gradio_webrtc's default 40 ms loses half the audio in
            # aiortc's Opus packetiser (AUD-014 checks that); HND-003 is about emit.
            return recording_handler(api, probe, emit=counting_emit, output_frame_size=480)

        return Scenario("send-receive", "audio", handler)

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        from fixtures.tracks import ToneAudioTrack

        peer = wire.peer(send=ToneAudioTrack(440.0))
        await peer.connect_ok()
        connected = time.time()
        recorder = await peer.wait_remote()
        # 5 s of input: AUD-005 measures 3 s of it after a start-up allowance
        await eventually(lambda: probe.count("receive") >= 250, 12.0)
        await recorder.wait_for_samples(int(48000 * 1.5), 4.0)
        await peer.close()
        return {"connected": connected}

    return Plan(scenario, script)


def _generator_plan(chunks: tuple[Chunk, ...]) -> Plan:
    """Receive mode: ``generation(num_steps)`` yields ``chunks`` (num_steps is recorded)."""

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            def generation(num_steps: Any) -> Iterator[Any]:
                probe.add("args", num_steps)
                for rate, freq, form, dtype, seconds in chunks:
                    probe.add("yield", time.time())
                    yield _chunk(rate, freq, form, dtype, seconds)
                probe.add("done", time.time())

            return generation

        return Scenario("receive", "audio", handler, inputs=(Input(3),))

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        peer = wire.peer()
        await peer.connect_ok()
        await peer.wait_remote()
        await _until_ended(peer, sum(c[4] for c in chunks) + 6.0)
        ended_at = time.time()
        await peer.close()
        return {"ended_at": ended_at}

    return Plan(scenario, script)


def _stereo_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            def generation(num_steps: Any) -> Iterator[Any]:
                left = tone(600.0, CHUNK_S, 24000)[0]
                yield (24000, np.repeat(left, 2)[None, :], "stereo")
                # stereo silence after: the tone's tail is not held back (AUD-013)
                yield (24000, np.zeros((1, 2 * 4800), dtype=np.int16), "stereo")

            return generation

        return Scenario("receive", "audio", handler, inputs=(Input(1),))

    return Plan(scenario, _generator_plan(()).script)


def _send_plan() -> Plan:
    def scenario(probe: Probe) -> Scenario:
        return Scenario("send", "audio", lambda api: recording_handler(api, probe))

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        from fixtures.tracks import ToneAudioTrack

        peer = wire.peer(send=ToneAudioTrack(440.0))
        await peer.connect_ok()
        await eventually(lambda: probe.count("receive") >= 60, 8.0)
        await peer.close()
        return {}

    return Plan(scenario, script)


# -- reply on pause ---------------------------------------------------------------------------

REPLY_FREQ = 800.0
#: What the reply generators yield: 0.5 s as (rate, array), then 0.3 s as (rate, array, "mono").
REPLY_S = (0.5, 0.3)


def speech(name: str) -> Any:
    from fixtures.speech import build_scenario

    return build_scenario(name, 48000)


def no_speech_audio() -> np.ndarray:
    from fixtures.audio import noise, silence

    parts = [
        noise(2.0, 48000, seed=1234, rms=0.03),
        silence(0.8, 48000),
        tone(440.0, 1.5, 48000, amplitude=0.3)[0],
        silence(1.2, 48000),
    ]
    return np.concatenate([np.asarray(p, dtype=np.int16).reshape(-1) for p in parts])


def _rop_plan(
    audio: np.ndarray,
    *,
    mode: str = "send-receive",
    inputs: tuple[Input, ...] = (),
    outputs: int = 0,
    reply: str = "audio",
    until_calls: int | None = None,
    tail_s: float = 2.5,
) -> Plan:
    """ReplyOnPause(fn) fed ``audio`` in real time; fn records each call.

    ``reply``: "audio" (yield the reply tone) or "outputs" (yield AdditionalOutputs only).
    """

    def scenario(probe: Probe) -> Scenario:
        def handler(api: Api) -> Any:
            def record_call(audio_arg: Any, extra: tuple[Any, ...]) -> None:
                rate, array = audio_arg
                probe.add(
                    "call",
                    {
                        "t": time.time(),
                        "rate": rate,
                        "shape": getattr(array, "shape", None),
                        "dtype": str(getattr(array, "dtype", None)),
                        "seconds": (np.asarray(array).size / rate) if rate else 0.0,
                        "audio": np.array(array, copy=True),
                        "extra": extra,
                    },
                )

            if reply == "outputs":

                def transcribe(audio: tuple[int, np.ndarray]) -> Iterator[Any]:
                    record_call(audio, ())
                    rate, array = audio
                    response = f"heard {np.asarray(array).size / rate:.1f} s"
                    yield api.AdditionalOutputs([{"role": "assistant", "content": response}])

                return api.reply_on_pause(transcribe)

            if inputs:

                def response_with(audio: tuple[int, np.ndarray], level: Any) -> Iterator[Any]:
                    record_call(audio, (level,))
                    yield (24000, tone(REPLY_FREQ, REPLY_S[0], 24000))

                return api.reply_on_pause(response_with)

            def response(audio: tuple[int, np.ndarray]) -> Iterator[Any]:
                record_call(audio, ())
                yield (24000, tone(REPLY_FREQ, REPLY_S[0], 24000))
                yield (24000, tone(REPLY_FREQ, REPLY_S[1], 24000), "mono")

            return api.reply_on_pause(response)

        return Scenario(
            mode,  # type: ignore[arg-type]
            "audio",
            handler,
            inputs=inputs,
            outputs=outputs,
            outputs_queue=False,
        )

    async def script(wire: Wire, probe: Probe) -> dict[str, Any]:
        from fixtures.tracks import ArrayAudioTrack

        wire.served.extra.setdefault("rop", True)
        track = ArrayAudioTrack(audio, 48000, on_end="silence")
        peer = wire.peer(send=track)
        await peer.connect_ok()
        if mode == "send-receive":
            await peer.wait_remote()
        duration = audio.shape[0] / 48000

        def done() -> bool:
            if until_calls is not None and len(probe.get("call")) >= until_calls:
                calls = probe.get("call")
                # the last reply has had time to play
                return time.time() > calls[-1]["t"] + sum(REPLY_S) + 0.6
            return False

        await eventually(done, duration + tail_s + 2.0)
        if until_calls is None or len(probe.get("call")) < until_calls:
            start = track.start_time or time.time()
            await eventually(lambda: time.time() > start + duration + tail_s, duration + tail_s)
        await peer.close()
        return {"start": track.start_time, "track": track}

    return Plan(scenario, script)


def audio_plans() -> dict[str, Plan]:
    """The audio sessions, by name."""
    plans = {
        "echo": _echo_plan(),
        "receiver": _receiver_plan(),
        "generator": _generator_plan(GENERATOR_CHUNKS),
        "tail": _generator_plan(((16000, 700.0, "pair", "int16", 0.1),)),
        "stereo": _stereo_plan(),
        "send": _send_plan(),
    }
    for rate in RATES:
        plans[f"rate-{rate}"] = _generator_plan(
            ((rate, 1000.0, "pair", "int16", 0.5), (rate, 0.0, "pair", "int16", 0.2))
        )
    return plans


def rop_plans() -> tuple[dict[str, Plan], dict[str, Any]]:
    """The ReplyOnPause sessions by name, and the speech scenario each one plays."""
    two_turns = speech("speech_pause_speech")
    one_turn = speech("speech_then_silence")
    hesitations = speech("hesitations")
    plans = {
        "turns": _rop_plan(two_turns.audio, until_calls=2),
        "inputs": _rop_plan(one_turn.audio, inputs=(Input(7),), until_calls=1),
        "outputs": _rop_plan(
            one_turn.audio, mode="send", outputs=1, reply="outputs", until_calls=1
        ),
        "no-speech": _rop_plan(no_speech_audio(), tail_s=1.0),
        "hesitations": _rop_plan(hesitations.audio, tail_s=1.5),
    }
    scenarios = {
        "turns": two_turns,
        "inputs": one_turn,
        "outputs": one_turn,
        "hesitations": hesitations,
    }
    return plans, scenarios
