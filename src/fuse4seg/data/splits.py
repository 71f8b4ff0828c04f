"""Patient-level, deterministic train/val/test splits and their check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fuse4seg.errors import ConfigError

__all__ = ["SPLITS", "make_split", "assert_patient_level_split"]

#: split names, in order
SPLITS: tuple[str, ...] = ("train", "val", "test")


def make_split(
    case_ids: Sequence[str], fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0
) -> dict[str, list[str]]:
    """Assign whole cases (patients) to train/val/test, deterministically.

    The ids are sorted, shuffled with ``np.random.default_rng(seed)``, then cut in order:
    ``n_val = round(f_val * n)``, ``n_test = round(f_test * n)`` (Python's round, half to
    even), ``n_train`` = the rest. When ``n >= 3``, every split with a positive fraction
    gets at least one case (taken from the largest split). The result only depends on the
    set of ids, the fractions and the seed. Each list is sorted.

    Raises:
        ConfigError: not three fractions, a negative one, or a sum that is not 1.
    """
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(
            f"split fractions must be three non-negative numbers summing to 1 "
            f"(train val test), got {list(fractions)}"
        )
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise ValueError("case ids must be unique")
    n = len(ids)
    order = np.random.default_rng(seed).permutation(n)
    counts = [0, int(round(fr[1] * n)), int(round(fr[2] * n))]
    counts[0] = n - counts[1] - counts[2]
    while counts[0] < 0:  # rounding overshoot: take from the larger of val/test
        j = 1 if counts[1] >= counts[2] else 2
        counts[j] -= 1
        counts[0] += 1
    if n >= 3:
        for k in range(3):
            if fr[k] > 0 and counts[k] == 0:
                donor = max(range(3), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[k] += 1
    out: dict[str, list[str]] = {}
    start = 0
    for name, c in zip(SPLITS, counts, strict=True):
        out[name] = sorted(ids[i] for i in order[start : start + c])
        start += c
    return out


def assert_patient_level_split(manifest: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` if a case id appears in two splits (or twice in one).

    ``manifest`` is a store manifest (``{"splits": {name: [case ids]}}``) or directly the
    ``{name: [case ids]}`` mapping.
    """
    splits = manifest.get("splits", manifest)
    seen: dict[str, str] = {}
    for name, ids in splits.items():
        for cid in ids:
            if cid in seen:
                where = "twice in" if seen[cid] == name else f"in {seen[cid]} and"
                raise ValueError(f"case {cid!r} is {where} {name}: split is not patient-level")
            seen[cid] = name
