"""Benchmarks: implementations side by side through their conformance adapters
(:mod:`conformance.bench.run`), and webrtc_ref's ReplyOnPause replay
(:mod:`conformance.bench.replay`)."""
