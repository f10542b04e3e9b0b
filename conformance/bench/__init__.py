"""Side-by-side benchmarks of implementations, through their conformance adapters."""
