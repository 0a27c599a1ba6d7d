"""The batcher of `cnnctl serve`: concurrent requests' images gathered into shared model calls,
each answer back to its own request, and the batch sizes the model is compiled for."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import numpy as np

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

    def model(images):
        seen.append(len(images))
        time.sleep(model_s)
        batch = np.stack(images)
        return list(np.stack([batch[:, 0, 0, 0], np.arange(len(batch))], axis=1))

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            batcher = Batcher(model, max_batch, max_wait_s, thread)
            batcher.start()
            answers = await asyncio.gather(*(batcher.classify(list(r)) for r in requests))
            await batcher.stop()
            return answers, batcher

    answers, batcher = asyncio.run(main())
    return [np.stack(a) for a in answers], seen, batcher


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
            results = await asyncio.gather(batcher.classify(list(images(1))),
                                           batcher.classify(list(images(2))),
                                           return_exceptions=True)
            await batcher.stop()
            return results

    results = asyncio.run(main())
    assert [str(r) for r in results] == ["out of memory"] * 2


def test_prepared_images_reach_run_in_order_and_failed_ones_answer_alone():
    """`prepare` (the decode of uploads) runs on the model thread while a batch gathers; `run`
    gets its outputs in the order of the batch; an answer that is a reason (an unreadable
    image) goes back to its own request only."""
    calls = {"prepare": [], "run": []}

    def prepare(blobs):
        calls["prepare"].append(list(blobs))
        return [b.decode() if b != b"bad" else None for b in blobs]

    def run(inputs):
        calls["run"].append(list(inputs))
        return [f"{x}!" if x is not None else "unreadable" for x in inputs]

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            batcher = Batcher(run, 8, 0.2, thread, prepare=prepare)
            batcher.start()
            first = asyncio.ensure_future(batcher.classify([b"a"]))
            await asyncio.sleep(0.02)  # the batch is gathering: "a" is being prepared
            rest = await asyncio.gather(batcher.classify([b"b", b"bad"]), batcher.classify([b"c"]))
            answers = [await first, *rest]
            await batcher.stop()
            return answers, batcher

    answers, batcher = asyncio.run(main())
    assert answers == [["a!"], ["b!", "unreadable"], ["c!"]]
    assert calls["prepare"][0] == [b"a"]  # prepared before the others arrived
    assert sum(calls["prepare"], []) == [b"a", b"b", b"bad", b"c"]
    assert calls["run"] == [["a", "b", None, "c"]]  # one model call, in order
    assert (batcher.batches, batcher.images) == (1, 4)


def test_a_batch_closes_once_no_image_comes_for_half_the_wait():
    """With a 1 s wait, two images 10 ms apart close their batch about 0.5 s after the last,
    not 1 s after the first; an image 0.8 s later goes into a batch of its own."""
    seen, closed = [], []

    def model(images):
        seen.append(len(images))
        closed.append(time.perf_counter())
        return list(images)

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            batcher = Batcher(model, 8, 1.0, thread)
            batcher.start()
            start = time.perf_counter()
            a = asyncio.ensure_future(batcher.classify([1]))
            await asyncio.sleep(0.01)
            b = asyncio.ensure_future(batcher.classify([2]))
            await asyncio.sleep(0.8)
            c = await batcher.classify([3])
            answers = [await a, await b, c]
            await batcher.stop()
            return start, answers

    start, answers = asyncio.run(main())
    assert answers == [[1], [2], [3]]
    assert seen == [2, 1]
    assert 0.45 < closed[0] - start < 0.75
