"""cnnctl.data.images: image files of any format and mode, checked and decoded into model
input."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from cnnctl.data import images


def test_folder_decodes_every_format_and_mode(tmp_path, load_splits, collect, epoch_of, odd_images):
    odd_images(tmp_path / "train" / "odd")
    odd_images(tmp_path / "train" / "more")
    splits = load_splits({"source": "folder", "train_dir": str(tmp_path / "train")}, input_shape=(24, 24, 3),
                         splits=("train",))
    assert splits.skipped == [] and splits.counts["train"] == 18
    x, _ = collect(epoch_of(splits))
    assert x.shape == (18, 24, 24, 3)


def test_probe_all_in_worker_processes_equals_in_process(tmp_path, monkeypatch, odd_images):
    paths = [str(p) for p in odd_images(tmp_path).values()]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    paths.append(str(tmp_path / "broken.png"))
    spec = images.image_spec((37, 23, 3))
    here = images.probe_all(paths, keep=spec)
    monkeypatch.setattr(images, "PROCESSES_FROM", 1)
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: probe_all never starts worker processes")
    spread = images.probe_all(paths, digest=True, keep=spec)
    assert [c.path for c in spread] == paths
    for a, b in zip(here, spread):
        assert (a.reason, a.native, a.format, a.mode, a.size) == \
            (b.reason, b.native, b.format, b.mode, b.size)
        assert (a.pixels is None) == (b.pixels is None)
        if a.pixels is not None:
            np.testing.assert_array_equal(a.pixels, b.pixels)
    assert spread[-1].reason == "truncated image (the file ends early)" and spread[0].sha256 is not None


def test_load_images_converts_any_file_to_the_model_input(tmp_path, odd_images):
    paths = odd_images(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    files = [str(p) for p in paths.values()] + [str(tmp_path / "broken.png")]
    for shape in ((28, 28, 1), (32, 30, 3)):
        batch, status = images.load_images(files, shape)
        assert batch.shape == (len(paths), *shape) and batch.dtype == np.float32
        assert [p for p, _ in status] == files
        assert [e is None for _, e in status] == [True] * len(paths) + [False]
        assert 0 <= batch.min() and batch.max() <= 255
    batch, _ = images.load_images([str(paths["sixteen.png"]), str(paths["rgba.png"])], (8, 8, 3))
    assert np.all(batch[0] == 128)  # 16-bit 0x8000 keeps its top 8 bits; not clipped to 255
    rgb = np.asarray(Image.open(paths["rgba.png"]).convert("RGB").resize((8, 8)), np.float32)
    assert np.abs(batch[1] - rgb).mean() < 40  # alpha dropped: colours are the image's own


@pytest.mark.parametrize("shape, color_mode", [((37, 23, 3), None), ((37, 23, 1), None),
                                               ((37, 23, 3), "grayscale"), ((28, 28, 1), None),
                                               ((32, 30, 3), None)])
def test_load_encoded_gives_the_pixels_of_load_images(tmp_path, odd_images, shape, color_mode):
    """Uploaded bytes (`cnnctl serve`) and the same bytes as a file (`cnnctl predict`): the same
    pixels, at the images' own size (kept from the check) and resized (the pipeline's decode)."""
    paths = odd_images(tmp_path)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)).save(
        tmp_path / "photo.jpg", quality=85)
    Image.fromarray(rng.integers(0, 256, (37, 23), dtype=np.uint8)).save(tmp_path / "grey.jpg")
    files = [*map(str, paths.values()), str(tmp_path / "photo.jpg"), str(tmp_path / "grey.jpg")]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    files.insert(3, str(tmp_path / "broken.png"))
    expected, status = images.load_images(files, shape, color_mode)
    got, reasons = images.load_encoded([open(f, "rb").read() for f in files], shape, color_mode)
    assert reasons == [reason for _, reason in status]
    assert reasons[3] == "truncated image (the file ends early)"
    assert got.dtype == np.float32 and got.shape == expected.shape == (len(files) - 1, *shape)
    np.testing.assert_array_equal(got, expected)
