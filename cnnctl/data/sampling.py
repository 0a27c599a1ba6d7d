"""`data.sampling: balanced`: the order of each training epoch when every class is drawn equally
often, a function of (seed, epoch) only, so that a resumed run rebuilds the epoch it left."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def epoch_order(sampling: str, labels: np.ndarray, seed: int) -> Callable[[int], np.ndarray] | None:
    """order(epoch) -> the int64 indices of the images that epoch draws, in the order it draws
    them; None for `sampling: none` (a plain permutation of the images, as before)."""
    if sampling == "none":
        return None
    labels = np.asarray(labels, dtype=np.int64)
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    cache: dict[int, np.ndarray] = {}

    def order(epoch: int) -> np.ndarray:
        # tf.data may ask from two threads (the resumed epoch and the ones after): no lookup
        # after a check, which another thread's clear() could fall between
        found = cache.get(epoch)
        if found is None:
            found = balanced_order(members, len(labels), seed, epoch)
            cache.clear()  # one epoch at a time: a stream asks for the next when it gets there
            cache[epoch] = found
        return found

    return order


def balanced_order(members: list[np.ndarray], n: int, seed: int, epoch: int) -> np.ndarray:
    """`n` draws, the same number from each class (n // K, the first n % K classes of a seeded
    shuffle one more): a class with fewer images than its draws goes through its images in
    a fresh random order as often as needed (each image repeats equally often, give or take
    one), a larger one gives a random subset of its images, another subset every epoch. The
    draws of all classes are then shuffled together.

    Args:
        members: the image indices of each class that has images.
        n: draws in the epoch (the images of the training split: an epoch has as many steps
            as without balancing).
        seed, epoch: the only inputs of the random draws.
    """
    # a stream of its own: not the (seed, epoch) permutation of plain epochs
    rng = np.random.default_rng([seed, epoch, 1])
    k = len(members)
    draws = np.full(k, n // k)
    draws[rng.permutation(k)[:n % k]] += 1
    picked = []
    for images, count in zip(members, draws):
        rounds = -(-count // len(images))
        picked.append(np.concatenate([rng.permutation(images) for _ in range(rounds)])[:count])
    return rng.permutation(np.concatenate(picked)).astype(np.int64)
