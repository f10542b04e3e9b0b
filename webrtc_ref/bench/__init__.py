"""Benchmarks (``python -m webrtc_ref.bench <name>``); see each module's docstring."""
