"""The Fashion-MNIST CNN of configs/fashion_mnist.yaml as a hand-written PyTorch training loop:
the same layers (PyTorch's default initialisation, not Keras's Glorot uniform), Adam 1e-3,
cross-entropy, batch 64, the whole data set as tensors on the device.

    python bench/plain_torch.py --data ../shared/data/fashion-mnist --epochs 3

Runs on CUDA when PyTorch sees a GPU, else on the CPU. Prints one line per epoch, then one JSON
line: {"device", "train_images", "epoch_seconds": [...], "train_accuracy": [...],
"test_accuracy", "test_loss"}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def read_idx(path: Path, offset: int) -> np.ndarray:
    """The bytes of a gzipped IDX file after its header (8 bytes for labels, 16 for images)."""
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def load(folder: Path, device: torch.device):
    """(x_train, y_train), (x_test, y_test): float32 [N, 1, 28, 28] in 0..1 and int64 labels."""
    def split(prefix):
        y = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 8)
        x = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(len(y), 1, 28, 28)
        return (torch.tensor(x, dtype=torch.float32, device=device) / 255,
                torch.tensor(y, dtype=torch.int64, device=device))

    return split("train"), split("t10k")


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 3 * 3, 64), nn.ReLU(),
        nn.Linear(64, 10),  # logits: CrossEntropyLoss applies the softmax
    )


def train_epoch(model, optimizer, x, y, batch_size: int) -> float:
    """One pass over (x, y) in a random order; returns the training accuracy over the pass."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for index in torch.randperm(len(x), device=x.device).split(batch_size):
        logits = model(x[index])
        loss = loss_fn(logits, y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        correct += (logits.argmax(1) == y[index]).sum()
    return correct.item() / len(x)


@torch.no_grad()
def evaluate(model, x, y, batch_size: int = 256) -> tuple[float, float]:
    """(mean loss, accuracy) over (x, y)."""
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size])
        labels = y[start:start + batch_size]
        loss += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
    return loss / len(x), correct / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of the 4 IDX .gz files")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-samples", type=int, help="use the first N training images")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    (x_train, y_train), (x_test, y_test) = load(args.data, device)
    x_train, y_train = x_train[:args.train_samples], y_train[:args.train_samples]
    model = build_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    seconds, accuracies = [], []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        accuracies.append(train_epoch(model, optimizer, x_train, y_train, args.batch_size))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        print(f"epoch {epoch + 1}/{args.epochs}: {seconds[-1]:.2f} s, "
              f"accuracy {accuracies[-1]:.4f}", flush=True)
    test_loss, test_accuracy = evaluate(model, x_test, y_test)
    print(json.dumps({
        "device": str(device), "train_images": len(x_train), "epoch_seconds": seconds,
        "train_accuracy": accuracies, "test_accuracy": test_accuracy, "test_loss": test_loss,
    }))


if __name__ == "__main__":
    main()
