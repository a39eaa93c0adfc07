"""Test-only callbacks that hold a fit at a known point, so a test can kill or signal it there for real.

Loaded by class path in the subprocess fits of tests/test_faults.py (tests/ is put on its PYTHONPATH).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, Trainer


class PauseAt(Callback):
    """At the end of the batch that reaches `step`, write `marker` (this process' pid) and wait up to `seconds`, or
    until a stop signal is noticed, so the test signals the process at that exact point."""

    def __init__(self, step: int, marker: str, seconds: float = 300.0) -> None:
        super().__init__()
        self.step = step
        self.marker = marker
        self.seconds = seconds
        self._done = False

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        if self._done or trainer.global_step != self.step:
            return
        self._done = True
        Path(self.marker).write_text(str(os.getpid()))
        deadline = time.monotonic() + self.seconds
        # Short sleeps: a signal handler runs between them, and the loop ends once it has asked for a stop.
        while time.monotonic() < deadline and not trainer.received_sigterm:
            time.sleep(0.05)
