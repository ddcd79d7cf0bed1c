"""ResonFL: self-hosted federated learning. SDK, job format, FL algorithms and simulator."""

__version__ = "0.1.0"
