"""Deterministic class oversampling (the multi-task paper's protocol).

Every training image of class c is repeated round(1/P_c) times, P_c being the class's share of the
training part: shares 49.3 %, 36.4 %, 14.2 % give ×2, ×3, ×7. (The paper's text says ⌈1/P_c⌉, but its
worked example and released code round; we round half up.) Nothing random: the same training part
always gives the same repeated list, and the shuffling of that list is the sampler's job.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


def repeat_factors(labels: Sequence[str]) -> dict[str, int]:
    """Class → repetition factor round(1/P_c) (at least 1)."""
    counts = Counter(labels)
    total = sum(counts.values())
    return {label: max(1, math.floor(total / count + 0.5)) for label, count in counts.items()}


def oversampled_indices(labels: Sequence[str]) -> list[int]:
    """Indices into ``labels`` with each index repeated by its class's factor, in input order."""
    factors = repeat_factors(labels)
    return [i for i, label in enumerate(labels) for _ in range(factors[label])]
