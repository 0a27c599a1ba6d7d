"""Dynamic batching: the images of concurrent requests gathered into one call of the model."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

# A batch being gathered closes early once no image has come for this part of --max-wait-ms
# (0.5: measured best of 0.1, 0.25, 0.5 and 1 = never, BENCHMARKS.md "Serving"):
# under load the requests of a wave arrive a fraction of a millisecond apart, and waiting out
# the whole window after the last of them only leaves the model idle.
QUIET_PART = 0.5


class Batcher:
    """Gathers images from concurrent requests into batches of at most `max_batch` and runs each
    batch through `run` (a list of N images -> a list of N answers) on `model_thread`, one batch
    at a time, off the event loop. A batch closes when it is full, `max_wait_s` after its first
    image, or once no image has arrived for QUIET_PART of `max_wait_s`; images that arrive while
    a batch runs make up the next one.

    With `prepare` (a list of images -> a list of inputs of `run`, e.g. the decode of uploaded
    bytes), the images gathered so far are prepared on `model_thread` whenever the gathering
    waits for more, so that the preparing of a batch overlaps its gathering instead of
    delaying its model call."""

    def __init__(self, run: Callable[[list[Any]], list[Any]], max_batch: int,
                 max_wait_s: float, model_thread: concurrent.futures.Executor,
                 prepare: Callable[[list[Any]], list[Any]] | None = None):
        self.run, self.prepare = run, prepare
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.model_thread = model_thread
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future]] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.batches = 0  # model calls made
        self.images = 0  # images classified

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.serve())

    async def stop(self) -> None:
        """Stop after the batch that is running; images still waiting get an error."""
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        while not self.queue.empty():
            _, future = self.queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))

    async def classify(self, images: list[Any]) -> list[Any]:
        """`run`'s answer for each of these images, computed in shared batches."""
        loop = asyncio.get_running_loop()
        futures = []
        for image in images:
            future = loop.create_future()
            self.queue.put_nowait((image, future))
            futures.append(future)
        if len(futures) == 1:  # the common case under load: one image per request
            return [await futures[0]]
        return list(await asyncio.gather(*futures))

    async def next_batch(self) -> tuple[list[tuple[Any, asyncio.Future]],
                                        list[concurrent.futures.Future]]:
        """The next batch: the first waiting image, every image already waiting behind it, and
        those that arrive before the batch closes, up to `max_batch`; and the `prepare` calls
        submitted for them, in order (none without `prepare`)."""
        items = [await self.queue.get()]
        prepared: list[concurrent.futures.Future] = []
        done = 0  # items[:done] are being prepared

        def prepare_gathered() -> None:
            nonlocal done
            if self.prepare is not None and done < len(items):
                prepared.append(self.model_thread.submit(
                    self.prepare, [image for image, _ in items[done:]]))
                done = len(items)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        quiet_s = self.max_wait_s * QUIET_PART
        while len(items) < self.max_batch:
            if not self.queue.empty():
                items.append(self.queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            prepare_gathered()
            try:
                items.append(await asyncio.wait_for(self.queue.get(), min(left, quiet_s)))
            except asyncio.TimeoutError:  # TimeoutError from Python 3.11 on
                break
        prepare_gathered()
        return items, prepared

    def run_prepared(self, prepared: list[concurrent.futures.Future], keep: list[int]) -> list:
        """`run` on the prepared images at the positions `keep` (on the model thread, where
        the `prepare` calls ran before it)."""
        inputs = [out for future in prepared for out in future.result()]
        return self.run([inputs[i] for i in keep])

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items, prepared = await self.next_batch()
            keep = [i for i, (_, future) in enumerate(items) if not future.cancelled()]
            if not keep:
                continue
            items = [items[i] for i in keep]
            try:
                if self.prepare is None:
                    out = await loop.run_in_executor(self.model_thread, self.run,
                                                     [image for image, _ in items])
                else:
                    out = await loop.run_in_executor(self.model_thread, self.run_prepared,
                                                     prepared, keep)
            except Exception as e:  # noqa: BLE001 -- each waiting request answers with it
                for _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            self.batches += 1
            self.images += len(items)
            for row, (_, future) in zip(out, items):
                if not future.done():
                    future.set_result(row)
