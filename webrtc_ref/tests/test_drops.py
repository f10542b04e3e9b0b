"""The bounded structures' drop accounting: DropCounter and MessageBacklog."""

from __future__ import annotations

import logging

import pytest

from webrtc_ref.drops import MAX_BACKLOG_BYTES, DropCounter, MessageBacklog

log = logging.getLogger("webrtc_ref.tests.drops")


def backlog(**kwargs: int) -> MessageBacklog:
    return MessageBacklog(DropCounter(log, "messages (test)", "[t]"), **kwargs)


def test_the_count_bound_drops_the_oldest() -> None:
    messages = backlog(max_messages=3)
    for n in range(5):
        messages.append(f"m{n}")
    assert len(messages) == 3 and messages.drops.count == 2
    assert messages.take_all() == ["m2", "m3", "m4"]
    assert len(messages) == 0 and messages.bytes == 0


def test_the_byte_bound_counts_utf8_and_drops_the_oldest() -> None:
    messages = backlog(max_messages=100, max_bytes=10)
    messages.append("ééé")  # 6 bytes in UTF-8, 3 characters
    assert messages.bytes == 6
    messages.append("abcd")
    assert messages.bytes == 10 and messages.drops.count == 0
    messages.append("x")
    assert messages.take_all() == ["abcd", "x"] and messages.drops.count == 1


def test_a_message_over_the_byte_bound_alone_is_dropped_and_the_rest_kept() -> None:
    messages = backlog(max_bytes=8)
    messages.append("keep")
    messages.append("y" * 9)
    assert messages.take_all() == ["keep"] and messages.drops.count == 1


def test_popleft_keeps_the_size_and_an_empty_backlog_raises() -> None:
    messages = backlog()
    messages.append("ab")
    messages.append("cde")
    assert messages.popleft() == "ab" and messages.bytes == 3
    messages.clear()
    with pytest.raises(IndexError):
        messages.popleft()


def test_large_handler_messages_are_bounded_in_bytes_before_count() -> None:
    """256 messages of the largest size a handler may send would be 16 MiB: the byte
    bound keeps a connection's backlog at 1 MiB."""
    messages = backlog()
    big = "z" * 65_536
    for _ in range(256):
        messages.append(big)
    assert messages.bytes <= MAX_BACKLOG_BYTES
    assert len(messages) == MAX_BACKLOG_BYTES // len(big)
    assert messages.drops.count == 256 - len(messages)
