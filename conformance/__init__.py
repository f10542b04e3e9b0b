"""The conformance suite: a requirement catalogue and the tests that judge an implementation."""
