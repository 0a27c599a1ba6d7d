"""The batcher of `cnnctl serve`: concurrent requests' images gathered into shared model calls,
each answer back to its own request, and the batch sizes the model is compiled for."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import numpy as np
import pytest

from cnnctl.serve.batching import Batcher
from cnnctl.serve.inference import batch_sizes


def test_batch_sizes_are_powers_of_two_up_to_the_largest():
    assert batch_sizes(1) == [1]
    assert batch_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert batch_sizes(48) == [1, 2, 4, 8, 16, 32, 48]


def run_batcher(requests: list[np.ndarray], max_batch: int, max_wait_s: float,
                model_s: float = 0.0):
    """Answers of concurrent `classify` calls, and the batch sizes the 'model' saw. The model
    returns each image's first pixel and its index in the batch."""
    seen = []

    def model(batch):
        seen.append(len(batch))
        time.sleep(model_s)
        return np.stack([batch[:, 0, 0, 0], np.arange(len(batch))], axis=1)

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            batcher = Batcher(model, max_batch, max_wait_s, thread)
            batcher.start()
            answers = await asyncio.gather(*(batcher.classify(r) for r in requests))
            await batcher.stop()
            return answers, batcher

    answers, batcher = asyncio.run(main())
    return answers, seen, batcher


def images(*values) -> np.ndarray:
    return np.array(values, np.float32).reshape(-1, 1, 1, 1)


def test_concurrent_requests_share_batches_and_get_their_own_answers():
    requests = [images(i) for i in range(10)] + [images(100, 101, 102)]
    answers, seen, batcher = run_batcher(requests, max_batch=4, max_wait_s=0.05)
    assert [a[:, 0].tolist() for a in answers] == [[i] for i in range(10)] + [[100, 101, 102]]
    assert max(seen) == 4 and sum(seen) == 13
    assert len(seen) == 4  # 13 images in batches of at most 4: 4 + 4 + 4 + 1
    assert (batcher.batches, batcher.images) == (4, 13)


def test_batch_of_one_is_no_batching():
    answers, seen, _ = run_batcher([images(i) for i in range(5)], max_batch=1, max_wait_s=0.05)
    assert seen == [1] * 5
    assert [a[0, 1] for a in answers] == [0] * 5


def test_images_arriving_while_a_batch_runs_make_up_the_next():
    """With no waiting (0 ms), the first image runs alone; the others queue behind it and go
    together."""
    answers, seen, _ = run_batcher([images(i) for i in range(6)], max_batch=8, max_wait_s=0.0,
                                   model_s=0.05)
    assert sum(seen) == 6 and len(seen) <= 3


def test_a_model_error_reaches_every_request_of_its_batch():
    def broken(batch):
        raise RuntimeError("out of memory")

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            batcher = Batcher(broken, 8, 0.05, thread)
            batcher.start()
            results = await asyncio.gather(batcher.classify(images(1)),
                                           batcher.classify(images(2)), return_exceptions=True)
            await batcher.stop()
            return results

    results = asyncio.run(main())
    assert [str(r) for r in results] == ["out of memory"] * 2
