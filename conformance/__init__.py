"""The conformance suite: a requirement catalogue and the tests that judge an implementation.

- ``requirements.toml`` / :mod:`conformance.catalogue`: every testable statement of the user
  guide and of the wire protocol (docs/protocol.md), numbered (``SIG-003``), with its level
  (MUST/SHOULD/MAY) and source; robustness requirements are SHOULDs with a rationale.
- :mod:`conformance.adapters`: one adapter per implementation (webrtc_ref, gradio_webrtc
  0.0.16 / 0.0.31, fastrtc 0.0.34), plus ``null`` (implements nothing) and ``broken``
  (deliberate defects) that the meta tests use to prove the suite can fail.
- :mod:`conformance.wire`: a browser stand-in (a real aiortc peer, the Gradio component
  server route and queue API, the data channel) against a launched app;
  :mod:`conformance.gradio_http` is its HTTP half.
- ``tests/``: one test per requirement, marked ``@pytest.mark.requirement(ID)``, grouped by
  area; ``meta_tests/``: tests of the suite itself.
- :mod:`conformance.plugin`: ``--impl``, UNSUPPORTED, expectation files
  (``expectations/<impl>.toml``), the JSON report (``build/conformance/<impl>.json``);
  :mod:`conformance.report` merges reports into docs/conformance.md.

Run: ``nox -s "conformance(impl='webrtc_ref')"`` or ``pytest conformance --impl=NAME``; see
docs/adding-an-implementation.md.
"""
