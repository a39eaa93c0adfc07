"""Biosignals: ECG R-peaks and RR intervals, PPG pulse peaks, HRV, classic rPPG methods and evaluation metrics.

A leaf library (numpy/scipy/scikit-learn/matplotlib only) that any other part of the package may import.
Modules: :mod:`.ecg`, :mod:`.ppg`, :mod:`.hrv`, :mod:`.rppg`, :mod:`.metrics`, :mod:`.quality`, :mod:`.spectrum`.
"""

from stress_lightning.signals.errors import SignalError

__all__ = ["SignalError"]
