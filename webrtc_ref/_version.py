"""The package version, read by hatchling and by ``webrtc-ref --version``."""

__version__ = "0.1.0"
