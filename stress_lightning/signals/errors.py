"""The one exception type of :mod:`stress_lightning.signals`."""


class SignalError(ValueError):
    """A signal cannot be processed as given: NaN runs, flat line, too short, bad sampling rate, ...

    Subclasses ``ValueError`` so callers that already catch bad-argument errors keep working.
    """
