"""stress-lightning: one multi-task face-video model (expression, rPPG heart rate and HRV, stress)."""

__version__ = "0.1.0"
