"""The training order as a function of (seed, epoch), so a fit resumed in the middle of an epoch finishes it.

torch's RandomSampler draws its order from a generator whose state a checkpoint does not hold: a fit resumed
mid-epoch would see a new order and Lightning would cut it where the old epoch stopped (some clips twice, others
never). Here the permutation (or the class-balanced draw) of epoch `e` is seeded by (seed, e), and a resumed epoch
skips the batches the checkpoint says were trained on. The DataLoader's own generator (worker seeds) is re-seeded
per epoch the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class EpochSampler(Sampler[int]):
    """A shuffled order per epoch, or a weighted draw with replacement (`weights`), reproducible from the seed.

    `set_epoch` (Lightning calls it before each training epoch) picks the epoch; `resume(epoch, skip)` makes that
    epoch's next iteration start `skip` samples in.
    """

    def __init__(self, num_samples: int, seed: int, weights: torch.Tensor | None = None) -> None:
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, not {num_samples}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.epoch = 0
        self._resume: tuple[int, int] | None = None
        # Handed to the DataLoader: its worker base seed is then drawn from (seed, epoch), not from the global RNG.
        self.loader_generator = torch.Generator()
        self.loader_generator.manual_seed(self._epoch_seed(0, 1))

    def _epoch_seed(self, epoch: int, stream: int) -> int:
        # Distinct, well-mixed 63-bit seeds for (seed, epoch, stream) (SplitMix64's finaliser).
        z = (self.seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) % 2**64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        return (z ^ (z >> 31)) % 2**63

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.loader_generator.manual_seed(self._epoch_seed(self.epoch, 1))

    def resume(self, epoch: int, skip: int) -> None:
        """The next iteration of `epoch` starts after its first `skip` samples."""
        self._resume = (int(epoch), max(0, int(skip)))

    def order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator()
        generator.manual_seed(self._epoch_seed(epoch, 0))
        if self.weights is None:
            return torch.randperm(self.num_samples, generator=generator)
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)

    def __iter__(self) -> Iterator[int]:
        order = self.order(self.epoch)
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]
        self._resume = None
        return iter(order[start:].tolist())

    def __len__(self) -> int:
        return self.num_samples


class EpochLoader(DataLoader):
    """The training DataLoader over an `EpochSampler`. Where it stands is kept by the data module's state_dict (in
    batches the trainer consumed; Lightning fetches one ahead, so a loader's own count would be one too far): its own
    state is empty. Having one tells Lightning the loader is resumable, instead of warning that a mid-epoch resume
    is unreliable."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return None
