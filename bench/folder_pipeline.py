"""Images per second of an image-folder input pipeline: two passes over a folder of class
subfolders, as a training loop would draw them, with no model.

    python bench/folder_pipeline.py keras DIR     # keras.utils.image_dataset_from_directory
    python bench/folder_pipeline.py cnnctl DIR    # cnnctl's `data.load` and its training stream

`keras`: image_dataset_from_directory, then `.cache().prefetch(AUTOTUNE)` as the TensorFlow
tutorials do: the first pass decodes the JPEG files and fills the cache, the second reads it.
`cnnctl`: `data.load` (checks every file and, for a folder that fits in memory, decodes it
once); each pass is one epoch of `Splits.train_from`. Setup is the time to build the pipeline.
Prints one JSON line: {"images", "setup_seconds", "pass_seconds": [first, second]}.
Needs TensorFlow (both pipelines are tf.data).
"""

from __future__ import annotations

import argparse
import json
import time

# Keras and TensorFlow are imported where they are used, not here: cnnctl checks a large folder
# in spawned worker processes, which import this script's top level again.

SHAPE = (32, 32, 3)


def keras_pipeline(train_dir: str, batch_size: int, seed: int):
    """(setup seconds, epoch -> dataset) of the plain Keras pipeline."""
    import keras
    import tensorflow as tf

    start = time.perf_counter()
    ds = keras.utils.image_dataset_from_directory(train_dir, image_size=SHAPE[:2],
                                                  batch_size=batch_size, shuffle=True, seed=seed)
    ds = ds.cache().prefetch(tf.data.AUTOTUNE)
    return time.perf_counter() - start, lambda epoch: ds


def cnnctl_pipeline(train_dir: str, batch_size: int, seed: int):
    """(setup seconds, epoch -> dataset) of cnnctl's training stream."""
    from cnnctl.config import schema as schema_lib
    from cnnctl.data import load as data_lib

    cfg = schema_lib.Config.model_validate({
        "model": {"input_shape": list(SHAPE), "layers": [
            {"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}]},
        "data": {"source": "folder", "train_dir": train_dir},
        "train": {"batch_size": batch_size, "seed": seed},
    })
    start = time.perf_counter()
    splits = data_lib.load(cfg, input_shape=SHAPE, label_mode="int", splits=("train",))
    return (time.perf_counter() - start,
            lambda epoch: splits.train_from(epoch, 0).take(splits.steps_per_epoch))


PIPELINES = {"keras": keras_pipeline, "cnnctl": cnnctl_pipeline}


def timed_pass(ds) -> tuple[int, float]:
    """(images, seconds) of one iteration over `ds`."""
    images = 0
    start = time.perf_counter()
    for x, _ in ds:
        images += int(x.shape[0])
    return images, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline", choices=sorted(PIPELINES))
    parser.add_argument("train_dir")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    setup, epoch_dataset = PIPELINES[args.pipeline](args.train_dir, args.batch_size, args.seed)
    passes = [timed_pass(epoch_dataset(epoch)) for epoch in range(2)]
    if passes[0][0] != passes[1][0]:
        raise SystemExit(f"the two passes gave {passes[0][0]} and {passes[1][0]} images")
    print(json.dumps({"images": passes[0][0], "setup_seconds": setup,
                      "pass_seconds": [seconds for _, seconds in passes]}))


if __name__ == "__main__":
    main()
