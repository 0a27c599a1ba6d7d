"""Dynamic batching: the images of concurrent requests gathered into one call of the model."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

import numpy as np


class Batcher:
    """Gathers images from concurrent requests into batches of at most `max_batch`, waiting at
    most `max_wait_s` after the first image of a batch for others, and runs each batch through
    `run` (images [N, H, W, C] -> [N, classes]) on `model_thread`, one batch at a time, off the
    event loop. Images that arrive while a batch runs make up the next one."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int,
                 max_wait_s: float, model_thread: concurrent.futures.Executor):
        self.run, self.max_batch, self.max_wait_s = run, max_batch, max_wait_s
        self.model_thread = model_thread
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
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

    async def classify(self, batch: np.ndarray) -> np.ndarray:
        """The model's [N, classes] output for these images, computed in shared batches."""
        loop = asyncio.get_running_loop()
        futures = []
        for image in batch:
            future = loop.create_future()
            self.queue.put_nowait((image, future))
            futures.append(future)
        if len(futures) == 1:  # the common case under load: one image per request
            return (await futures[0])[None]
        return np.stack(await asyncio.gather(*futures))

    async def next_batch(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        """The next batch: the first waiting image, every image already waiting behind it, and
        those that arrive within `max_wait_s` of the first, up to `max_batch`."""
        items = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(items) < self.max_batch:
            if not self.queue.empty():
                items.append(self.queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                items.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:  # TimeoutError from Python 3.11 on
                break
        return items

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self.next_batch()
            items = [(image, future) for image, future in items if not future.cancelled()]
            if not items:
                continue
            try:
                out = await loop.run_in_executor(self.model_thread, self.run,
                                                 np.stack([image for image, _ in items]))
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
