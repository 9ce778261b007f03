"""adbench: benchmark industrial image anomaly-detection methods side by side."""

__version__ = "0.1.0"
