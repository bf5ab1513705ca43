"""Learning-rate schedules, stepped per optimizer step.

Written here, not timm's CosineLRScheduler (restarts only at equal cycle lengths, and is not a torch LRScheduler)
nor torch's SequentialLR (two schedulers per phase): one pure function of the step in a LambdaLR resumes exactly.
"""

from __future__ import annotations

import math
from bisect import bisect_right

from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine:
    """Linear warm-up then cosine decay to `final_factor`, restarted at each phase start.

    With phase starts at the unfreeze steps this is fastai's `fine_tune`: one cycle for the head,
    a fresh cycle once the backbone trains. A plain object (not a closure) so LambdaLR can save it.
    """

    def __init__(self, total_steps: int, phase_starts: list[int], warmup_fraction: float, final_factor: float):
        self.bounds = sorted({0, *(s for s in phase_starts if 0 < s < total_steps)}) + [max(total_steps, 1)]
        self.warmup_fraction, self.final_factor = warmup_fraction, final_factor

    def __call__(self, step: int) -> float:
        phase = min(bisect_right(self.bounds, step) - 1, len(self.bounds) - 2)
        start, end = self.bounds[phase], self.bounds[phase + 1]
        length, position = end - start, step - start
        warmup = max(1, round(self.warmup_fraction * length))
        if position < warmup:
            return (position + 1) / warmup
        progress = min(1.0, (position - warmup) / max(1, length - warmup))
        return self.final_factor + (1 - self.final_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer, total_steps: int, phase_starts: list[int], warmup_fraction: float = 0.1, final_factor: float = 0.01
) -> LambdaLR:
    return LambdaLR(optimizer, WarmupCosine(total_steps, phase_starts, warmup_fraction, final_factor))
