"""The Fashion-MNIST CNN of configs/fashion_mnist.yaml as the plain Keras script a user would
write from the tutorials: NumPy arrays scaled to 0..1, one-hot labels, `compile` and `fit`.

    KERAS_BACKEND=jax python bench/plain_keras.py --epochs 3 --train-samples 10000

Data comes from `keras.datasets.fashion_mnist` (offline: the four IDX files in
$KERAS_HOME/datasets/fashion-mnist/). Prints Keras's line per epoch, then one JSON line:
{"backend", "train_images", "epoch_seconds": [...], "train_accuracy": [...],
"test_accuracy", "test_loss"}. Imports no TensorFlow unless it is the Keras backend.
"""

from __future__ import annotations

import argparse
import json
import time

import keras


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch, from its first batch to its end."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def build_model() -> keras.Model:
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-samples", type=int, help="use the first N training images")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    x_train, y_train = x_train[:args.train_samples], y_train[:args.train_samples]
    x_train = (x_train.astype("float32") / 255)[..., None]
    x_test = (x_test.astype("float32") / 255)[..., None]
    y_train = keras.utils.to_categorical(y_train, num_classes=10)
    y_test = keras.utils.to_categorical(y_test, num_classes=10)

    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    timer = EpochTimer()
    history = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                        shuffle=True, callbacks=[timer], verbose=2)
    test_loss, test_accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    print(json.dumps({
        "backend": keras.backend.backend(), "train_images": len(x_train),
        "epoch_seconds": timer.seconds, "train_accuracy": history.history["accuracy"],
        "test_accuracy": test_accuracy, "test_loss": test_loss,
    }))


if __name__ == "__main__":
    main()
