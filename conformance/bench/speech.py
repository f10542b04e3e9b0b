"""The turns figure's scenarios: ``fixtures.speech``'s, and two more made the same way.

``fixtures.speech`` has three scenarios with speech (4 turns between them) and two where a
correct ``ReplyOnPause`` must stay silent (``noise_only``, ``tone_only``). Turn latency from
4 turns has no usable p95, so the benchmark adds two speech scenarios built from the same
espeak-ng utterances (``fixtures.speech.utterance``: trimmed, peak 0.7, exact speech
boundaries) with pauses long enough for every implementation's reply to end before the
next turn starts:

- ``questions``: three questions, each followed by 2.5 s of silence (3 turns);
- ``short_answers``: four short answers (0.7-1.2 s), each followed by 2.5 s of silence
  (4 turns).

Each scenario can be delayed by a lead of a few milliseconds of extra silence
(:func:`scenario` ``lead_s``): the benchmark repeats its scenarios with different leads so
that the ends of speech fall at different phases of the 20 ms frames and of each
implementation's VAD windows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fixtures.speech import (
    LEAD_SILENCE_S,
    SCENARIOS,
    Segment,
    SpeechScenario,
    build_scenario,
    utterance,
)

#: Scenarios with speech, each with the turns a correct implementation answers.
SPEECH: tuple[str, ...] = (
    "speech_pause_speech",
    "hesitations",
    "speech_then_silence",
    "questions",
    "short_answers",
)
#: Scenarios where a correct implementation never replies.
SILENT: tuple[str, ...] = ("noise_only", "tone_only")

#: The bench's own scenarios: the utterances, each followed by ``GAP_S`` of silence.
TEXTS: dict[str, tuple[str, ...]] = {
    "questions": (
        "What time is it in Tokyo right now",
        "Could you book a table for two at eight",
        "Thank you that is all for today",
    ),
    "short_answers": ("Yes please", "Sounds good to me", "Not right now", "Okay thank you"),
}
GAP_S = 2.5


def scenario(name: str, sample_rate: int = 48000, lead_s: float = 0.0) -> SpeechScenario:
    """The scenario ``name`` (one of :data:`SPEECH` or :data:`SILENT`), ``lead_s`` later."""
    base: SpeechScenario
    if name in SCENARIOS:
        base = build_scenario(name, sample_rate)
    elif name in TEXTS:
        parts: list[np.ndarray] = [np.zeros(round(LEAD_SILENCE_S * sample_rate))]
        segments = [Segment("silence", 0.0, LEAD_SILENCE_S)]
        turns: list[float] = []
        n = parts[0].size
        for text in TEXTS[name]:
            speech = utterance(text, sample_rate)
            gap = np.zeros(round(GAP_S * sample_rate))
            segments.append(Segment("speech", n / sample_rate, (n + speech.size) / sample_rate))
            turns.append((n + speech.size) / sample_rate)
            n += speech.size
            segments.append(Segment("silence", n / sample_rate, (n + gap.size) / sample_rate))
            n += gap.size
            parts += [speech, gap]
        audio = np.rint(np.clip(np.concatenate(parts), -1, 1) * 32767.0).astype(np.int16)
        base = SpeechScenario(name, audio, sample_rate, segments, turns, list(TEXTS[name]))
    else:
        known = ", ".join((*SPEECH, *SILENT))
        raise ValueError(f"unknown scenario {name!r}; choose from {known}")
    lead = round(lead_s * sample_rate)
    if lead <= 0:
        return base
    shift = lead / sample_rate
    return dataclasses.replace(
        base,
        audio=np.concatenate([np.zeros(lead, dtype=np.int16), base.audio]),
        segments=[  # the lead joins the leading silence
            Segment(s.kind, 0.0 if i == 0 else s.start_s + shift, s.end_s + shift)
            for i, s in enumerate(base.segments)
        ],
        expected_turn_ends=[t + shift for t in base.expected_turn_ends],
    )
