"""Patient-level, deterministic train/val/test splits, K-fold cross-validation folds and
their checks.

Folds follow nnU-Net's ``splits_final.json``: a list of K dicts ``{"train": [...case ids],
"val": [...case ids]}``; every case is in exactly one ``val`` list (the held-out fold) and in
the ``train`` lists of the other K - 1 folds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fuse4seg.errors import ConfigError

__all__ = [
    "SPLITS",
    "FOLDS_NAME",
    "MIN_TRAIN_CASES",
    "make_split",
    "assert_patient_level_split",
    "make_folds",
    "check_folds",
]

#: split names, in order
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: file name of the cross-validation folds inside a store (nnU-Net's name)
FOLDS_NAME = "splits_final.json"
#: fewest training cases a fold may have: every batch holds >= 2 patients (D_tr and D_val)
MIN_TRAIN_CASES = 2


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


def _smallest_valid_k(n: int, min_train: int) -> int | None:
    """Smallest K in 2..n whose every fold trains on ``>= min_train`` cases (None: no K)."""
    for k in range(2, n + 1):
        if n - math.ceil(n / k) >= min_train:
            return k
    return None


def make_folds(
    case_ids: Sequence[str], k: int, seed: int = 0, min_train: int = MIN_TRAIN_CASES
) -> list[dict[str, list[str]]]:
    """Patient-level K-fold cross-validation folds, deterministically.

    The ids are sorted, shuffled with ``np.random.default_rng(seed)`` and cut into K
    contiguous chunks whose sizes differ by at most one (the first ``n mod K`` chunks are one
    larger); fold ``i`` validates on chunk ``i`` and trains on the others. The result only
    depends on the set of ids, ``k`` and ``seed``; each list is sorted.

    Args:
        case_ids: unique case (patient) ids.
        k: number of folds, ``>= 2``.
        seed: shuffle seed.
        min_train: fewest training cases every fold must have (a patient-level batch needs
            at least 2 patients).

    Returns:
        ``[{"train": [...], "val": [...]}, ...]`` of length ``k``.

    Raises:
        ConfigError: ``k < 2``, fewer cases than folds, or a fold with fewer than
            ``min_train`` training cases; the message names a K that works.
    """
    ids = sorted(set(case_ids))
    if len(ids) != len(case_ids):
        raise ValueError("case ids must be unique")
    n = len(ids)
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"--folds must be an integer >= 2, got {k!r}")
    if n < k:
        hint = (
            f"use --folds {n} or fewer"
            if _smallest_valid_k(n, min_train) is not None
            else f"cross-validation needs >= {min_train + 1} cases"
        )
        raise ConfigError(f"{n} case(s) cannot make {k} folds: {hint}")
    smallest_train = n - math.ceil(n / k)
    if smallest_train < min_train:
        good = _smallest_valid_k(n, min_train)
        hint = (
            f"use --folds {good} or more (with {n} cases)"
            if good is not None
            else f"cross-validation needs >= {min_train + 1} cases"
        )
        raise ConfigError(
            f"{k} folds of {n} cases leave a fold with {smallest_train} training case(s); "
            f"training needs >= {min_train} (patients_per_batch): {hint}"
        )
    order = np.random.default_rng(seed).permutation(n)
    chunks = np.array_split(order, k)
    folds = []
    for i in range(k):
        val = sorted(ids[j] for j in chunks[i])
        held = set(val)
        folds.append({"train": [c for c in ids if c not in held], "val": val})
    return folds


def check_folds(folds: Any, case_ids: Sequence[str] | None = None) -> list[dict[str, list[str]]]:
    """Check a ``splits_final.json`` list and return it with plain lists.

    Every fold must be ``{"train": [...], "val": [...]}`` with disjoint, non-empty lists; the
    ``val`` lists must partition the cases (each case held out exactly once) and each
    fold's ``train`` must be the other cases. With ``case_ids``, the folds must cover exactly
    those cases.

    Raises:
        ValueError: the folds break one of these rules (the message says which).
    """
    if not isinstance(folds, list) or len(folds) < 2:
        raise ValueError("folds must be a list of at least 2 {train, val} entries")
    out: list[dict[str, list[str]]] = []
    for i, fold in enumerate(folds):
        if not isinstance(fold, dict) or set(fold) < {"train", "val"}:
            raise ValueError(f"fold {i} is not a {{'train': [...], 'val': [...]}} entry")
        train, val = fold["train"], fold["val"]
        lists = (train, val)
        if not all(isinstance(x, list) and all(isinstance(c, str) for c in x) for x in lists):
            raise ValueError(f"fold {i}: train and val must be lists of case ids")
        if not train or not val:
            raise ValueError(f"fold {i} has an empty train or val list")
        if set(train) & set(val):
            raise ValueError(f"fold {i}: a case is in both train and val")
        out.append({"train": list(train), "val": list(val)})
    all_val = [c for f in out for c in f["val"]]
    everything = set(all_val)
    if len(all_val) != len(everything):
        raise ValueError("a case is held out in two folds")
    for i, f in enumerate(out):
        if set(f["train"]) | set(f["val"]) != everything or len(f["train"]) != len(set(f["train"])):
            raise ValueError(f"fold {i}: train is not the cases of the other folds")
    if case_ids is not None and everything != set(case_ids):
        missing = sorted(set(case_ids) - everything)
        extra = sorted(everything - set(case_ids))
        raise ValueError(
            f"folds do not match the store's cases (missing {missing[:3]}, unknown {extra[:3]})"
        )
    return out
