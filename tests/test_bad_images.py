"""Bad image files in a folder data set (issue "Nothing lost, nothing crashes"): `data check`
lists each with its reason, training and predict skip exactly those and convert the rest.

One folder holds every case, built from real CIFAR-10 JPEGs and Fashion-MNIST images plus
generated broken files. Tests run as root, whom chmod 000 does not stop: the folder's
"permission denied" file is simulated by making open() raise PermissionError, and a separate
test drops to an unprivileged user for a real chmod 000 file.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnctl.data import images
from cnnctl.cli import app

# file (under train/) -> the reason every command gives for skipping it
SKIPPED = {
    "airplane/empty.jpg": "empty file (0 bytes)",
    "airplane/notes.jpg": "not an image (unknown or damaged file format)",
    "airplane/cut.jpg": "truncated image (the file ends early)",
    "airplane/cut.png": "truncated image (the file ends early)",
    "cat/loop.jpg": "symbolic link loop (the link leads back to itself)",
    "cat/pipe.jpg": "not a regular file (a named pipe)",
    "ship/locked.jpg": "permission denied (cannot open the file); make it readable or remove it",
    "ship/bomb.png": "image too large (400 megapixels; PIL refuses more than 179 as a possible "
                     "decompression bomb): downscale it",
}
# file (under train/) -> (format, mode, size) of a file that is converted and used
CONVERTED = {
    "cat/cmyk.jpg": ("JPEG", "CMYK", "32x32"),
    "cat/grey.png": ("PNG", "L", "28x28"),
    "cat/alpha.png": ("PNG", "RGBA", "32x32"),
    "cat/deep.png": ("PNG", "I;16", "28x28"),
    "ship/anim.gif": ("GIF (animated)", "P", "32x32"),
    "ship/photo.webp": ("WEBP", "RGB", "32x32"),
    "ship/photo.bmp": ("BMP", "RGB", "32x32"),
    "ship/huge.jpg": ("JPEG", "RGB", "8000x8000"),
    "ship/UPPER.JPG": ("JPEG", "RGB", "32x32"),
}
PLAIN = 6  # real CIFAR JPEGs per class in train/, 3 in test/
CLASSES = ["airplane", "cat", "ship"]


@pytest.fixture(scope="module")
def config_of(colour_cnn_yaml):
    """config_of(root) -> a tiny CNN on the folders root/train and root/test (data on line 8)."""
    return lambda root: colour_cnn_yaml(
        comment="bad-image tests: a tiny CNN on a folder of real and broken images",
        name=None, input_shape="[32, 32, 3]",
        data=f'{{source: folder, train_dir: "{root}/train", test_dir: "{root}/test"}}',
        optimizer="{name: adam, learning_rate: 0.001}", train="{epochs: 1, batch_size: 8, seed: 1}")

runner = CliRunner()


def png_claiming(width: int, height: int) -> bytes:
    """A valid little PNG whose header says width x height: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 99)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def folder(cifar_folders, tmp_path_factory, config_of, fashion_mnist_idx) -> Path:
    """root/train/{airplane,cat,ship}: PLAIN real JPEGs each plus every case of the table;
    root/test/: 3 real JPEGs per class plus a copy of one train image."""
    root = tmp_path_factory.mktemp("bad_images")
    for split, n in (("train", PLAIN), ("test", 3)):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for file in sorted((cifar_folders / split / name).iterdir())[:n]:
                shutil.copyfile(file, root / split / name / file.name)
    train = root / "train"
    first = sorted((train / "airplane").iterdir())[0]
    shutil.copyfile(first, root / "test" / "airplane" / "copy.jpg")  # a train/test duplicate
    photo = Image.open(sorted((train / "ship").iterdir())[0]).convert("RGB")
    jpeg, png = first.read_bytes(), io.BytesIO()
    photo.save(png, "PNG")
    grey = fashion_mnist_idx("train", 2)[0][..., 0]  # two real Fashion-MNIST images

    (train / "airplane" / "empty.jpg").write_bytes(b"")
    (train / "airplane" / "notes.jpg").write_text("shopping list: milk, eggs\n")
    (train / "airplane" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (train / "airplane" / "cut.png").write_bytes(png.getvalue()[:-20])  # PIL reads it, TF not
    os.symlink("loop.jpg", train / "cat" / "loop.jpg")
    os.mkfifo(train / "cat" / "pipe.jpg")  # reading it would wait forever for a writer
    os.symlink(".", train / "cat" / "again")  # a folder loop: its files must be listed once
    shutil.copyfile(first, train / "ship" / "locked.jpg")  # see `locked`
    (train / "ship" / "bomb.png").write_bytes(png_claiming(20000, 20000))

    photo.convert("CMYK").save(train / "cat" / "cmyk.jpg")
    Image.fromarray(grey[0]).save(train / "cat" / "grey.png")
    photo.convert("RGBA").save(train / "cat" / "alpha.png")
    Image.fromarray(grey[1].astype(np.uint16) * 257).save(train / "cat" / "deep.png")
    frames = [photo.convert("P"), photo.rotate(90).convert("P"), photo.rotate(180).convert("P")]
    frames[0].save(train / "ship" / "anim.gif", save_all=True, append_images=frames[1:])
    photo.save(train / "ship" / "photo.webp")
    photo.save(train / "ship" / "photo.bmp")
    photo.resize((8000, 8000), Image.BILINEAR).save(train / "ship" / "huge.jpg", quality=70)
    photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(train / "ship" / "UPPER.JPG")
    (root / "config.yaml").write_text(config_of(root))
    return root


def lock(patch: pytest.MonkeyPatch) -> None:
    """open() of any locked.jpg fails as it does for a user without read permission."""
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if str(file).endswith("locked.jpg"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    patch.setattr(images, "open", guarded_open, raising=False)


@pytest.fixture
def locked(monkeypatch):
    lock(monkeypatch)


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):
    """`cnnctl train` of the folder with the RGB model: (result, run directory)."""
    run = tmp_path_factory.mktemp("runs") / "rgb"
    with pytest.MonkeyPatch.context() as patch:
        lock(patch)
        result = runner.invoke(app, ["train", str(folder / "config.yaml"), "--run-dir", str(run)])
    return result, run


def first_plain(folder: Path) -> Path:
    """The first real CIFAR JPEG of train/airplane, copied into test/ as a duplicate."""
    return sorted(p for p in (folder / "train" / "airplane").iterdir() if p.name[0].isdigit())[0]


def test_data_check_lists_every_unreadable_file_with_its_reason(folder, locked):
    result = runner.invoke(app, ["data", "check", str(folder / "config.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    train = folder / "train"
    assert report["unreadable"] == [{"path": str(train / name), "reason": SKIPPED[name]}
                                    for name in sorted(SKIPPED)]
    assert report["class_names"] == CLASSES
    split = report["splits"]["train"]
    assert split["classes"] == {"airplane": PLAIN, "cat": PLAIN + 4, "ship": PLAIN + 5}
    assert split["count"] == 3 * PLAIN + len(CONVERTED) and split["unreadable"] == len(SKIPPED)
    assert report["splits"]["test"]["classes"] == {"airplane": 4, "cat": 3, "ship": 3}
    assert "val" not in report["splits"]
    assert split["sizes"]["32x32"] == 3 * PLAIN + 6 and split["sizes"]["8000x8000"] == 1
    assert split["sizes"]["28x28"] == 2 and split["distinct_sizes"] == 3
    assert split["modes"] == {"RGB": 3 * PLAIN + 4, "CMYK": 1, "L": 1, "RGBA": 1, "I;16": 1,
                              "P": 1}
    assert split["formats"] == {"JPEG": 3 * PLAIN + 3, "PNG": 3, "GIF (animated)": 1, "WEBP": 1,
                                "BMP": 1}
    first = first_plain(folder)
    assert report["duplicates"] == [{
        "sha256": images.probe(str(first), digest=True).sha256,
        "paths": [str(first), str(folder / "test" / "airplane" / "copy.jpg")],
        "splits": ["train", "test"], "classes": ["airplane"]}]
    assert any("1 image(s) are in more than one split (train/test)" in warning
               for warning in report["warnings"])


def test_data_check_text_report(folder, locked):
    result = runner.invoke(app, ["data", "check", str(folder / "config.yaml")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"data: folder, 3 classes ({folder / 'config.yaml'})"
    assert lines[2].split() == ["split", "images", *CLASSES, "unreadable"]
    assert lines[3].split() == ["train", "27", "6", "10", "11", "8"]
    assert lines[4].split() == ["test", "10", "4", "3", "3", "0"]
    for name, reason in SKIPPED.items():
        assert f"  {folder / 'train' / name}: {reason}" in lines
    copy = folder / "test" / "airplane" / "copy.jpg"
    assert f"  train/test: {first_plain(folder)}, {copy}" in lines


def test_training_skips_each_bad_file_with_its_reason_and_uses_the_rest(trained, folder):
    result, run = trained
    assert result.exit_code == 0, result.output
    assert "train: airplane 6, cat 10, ship 11" in result.stdout
    skipped = [line.strip() for line in result.stdout.splitlines() if "skipped " in line]
    assert sorted(skipped) == sorted(f"skipped {folder / 'train' / name}: {reason}"
                                     for name, reason in SKIPPED.items())
    assert (run / "checkpoints" / "last.keras").is_file()
    assert json.loads((run / "metrics.json").read_text())  # test split evaluated


def test_grayscale_model_trains_on_the_same_folder(folder, tmp_path, locked):
    result = runner.invoke(app, ["train", str(folder / "config.yaml"), "--run-dir",
                                 str(tmp_path / "grey"), "--set", "model.input_shape=[32,32,1]"])
    assert result.exit_code == 0, result.output
    assert "train: airplane 6, cat 10, ship 11" in result.stdout
    assert sum("skipped " in line for line in result.stdout.splitlines()) == len(SKIPPED)


def test_predict_gives_an_error_per_unreadable_file_and_results_for_the_rest(trained, folder,
                                                                             locked):
    _, run = trained
    result = runner.invoke(app, ["predict", str(run), str(folder / "train"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths))  # the folder loop lists nothing twice
    train = folder / "train"
    errors = {row["path"]: row["error"] for row in rows if "error" in row}
    assert errors == {str(train / name): reason for name, reason in SKIPPED.items()}
    predicted = {row["path"] for row in rows if "top" in row}
    assert {str(train / name) for name in CONVERTED} <= predicted
    assert len(predicted) == 3 * PLAIN + len(CONVERTED)
    assert all(len(row["top"]) == 3 and row["top"][0]["label"] in CLASSES
               for row in rows if "top" in row)


def test_every_convertible_file_becomes_the_model_input(folder):
    """Both colour modes: the right shape, pixel values 0..255, and the huge JPEG not blank."""
    files = [str(folder / "train" / name) for name in CONVERTED]
    for shape in ((32, 32, 3), (32, 32, 1)):
        batch, status = images.load_images(files, shape)
        assert [reason for _, reason in status] == [None] * len(files)
        assert batch.shape == (len(files), *shape)
        assert 0 <= batch.min() and batch.max() <= 255
    for name, (kind, mode, size) in CONVERTED.items():
        check = images.probe(str(folder / "train" / name))
        assert (check.format + (" (animated)" if check.frames > 1 else ""), check.mode,
                f"{check.size[0]}x{check.size[1]}") == (kind, mode, size)
    # the huge JPEG is decoded at a reduced size (never all 64 megapixels) and looks like its
    # source photo, downscaled
    huge, _ = images.load_images([files[list(CONVERTED).index("ship/huge.jpg")]], (32, 32, 3))
    photo = sorted((folder / "train" / "ship").iterdir())[0]
    assert np.abs(huge[0] - np.asarray(Image.open(photo), np.float32)).mean() < 20


def test_unreadable_permission_for_a_real_user():
    """chmod 000 on a file and on a sub-folder, seen by a user it applies to: root forks a
    child that becomes `nobody`."""
    folder = Path(tempfile.mkdtemp(prefix="cnnctl-perm-"))  # in /tmp: others may enter it
    try:
        folder.chmod(0o755)
        Image.new("RGB", (8, 8)).save(folder / "open.jpg")
        Image.new("RGB", (8, 8)).save(folder / "secret.jpg")
        (folder / "private").mkdir()
        Image.new("RGB", (8, 8)).save(folder / "private" / "hidden.jpg")
        (folder / "secret.jpg").chmod(0)
        (folder / "private").chmod(0)

        def listed() -> dict:
            return {path: images.probe(path).reason for path in images.list_images(folder)}

        seen = listed() if os.geteuid() != 0 else as_nobody(listed)
        assert seen == {
            str(folder / "open.jpg"): None,
            str(folder / "private"): "cannot read the folder (Permission denied)",
            str(folder / "secret.jpg"): "permission denied (cannot open the file); make it "
                                        "readable or remove it"}
    finally:
        (folder / "private").chmod(0o755)
        shutil.rmtree(folder)


def as_nobody(function):
    """function() (its result JSON-able), run in a forked child as the unprivileged user nobody."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: drop to nobody, run, report, exit without pytest's cleanup
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, json.dumps(function()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(child, 0)
    return json.loads(answer)


def test_empty_folder_and_empty_class_folder_are_errors_before_training(tmp_path, cifar_folders,
                                                                        config_of):
    config = tmp_path / "config.yaml"
    empty = tmp_path / "empty"
    empty.mkdir()
    config.write_text(config_of(tmp_path).replace(f'"{tmp_path}/train"', f'"{empty}"'))
    for command in (["data", "check", str(config)], ["train", str(config), "--run-dir",
                                                       str(tmp_path / "run")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines() == [
            f"{config}:8: data.train_dir: {empty} has no class subfolders (it is empty); put each class's "
            f"images in a subfolder, e.g. {empty}/cat/1.jpg"]
        assert "Traceback" not in result.output and "Epoch" not in result.output

    shutil.copyfile(sorted((cifar_folders / "train" / "cat").iterdir())[0], empty / "1.jpg")
    result = runner.invoke(app, ["data", "check", str(config)])
    assert result.stderr.splitlines() == [
        f"{config}:8: data.train_dir: {empty} has no class subfolders (it holds 1 image file but no "
        f"folders); put each class's images in a subfolder, e.g. {empty}/cat/1.jpg"]

    train = tmp_path / "train"
    shutil.copytree(cifar_folders / "train", train)
    (train / "dog").mkdir()
    config.write_text(config_of(tmp_path).replace(f'"{tmp_path}/test"',
                                                  f'"{cifar_folders}/test"'))
    kinds = ".jpg, .jpeg, .png, .bmp, .gif, .webp"
    result = runner.invoke(app, ["train", str(config), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"{config}:8: data.train_dir: class folder {train}/dog has no image files ({kinds}); add images or "
        "remove it"]
    assert "Epoch" not in result.output
    (train / "dog" / "readme.txt").write_text("dogs go here")
    result = runner.invoke(app, ["data", "check", str(config)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{config}:8: data.train_dir: class folder {train}/dog has no image files ({kinds}); it holds 1 "
        "other file, e.g. readme.txt; add images or remove it"]


def test_a_class_whose_files_are_all_unreadable_is_an_error_naming_one(tmp_path, cifar_folders,
                                                                       config_of):
    train = tmp_path / "train"
    shutil.copytree(cifar_folders / "train", train)
    broken = sorted((train / "ship").iterdir())
    for f in broken:
        f.write_bytes(b"")
    config = tmp_path / "config.yaml"
    config.write_text(config_of(tmp_path).replace(f'"{tmp_path}/test"',
                                                  f'"{cifar_folders}/test"'))
    result = runner.invoke(app, ["train", str(config), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"{config}:8: data.train_dir: no readable images for class 'ship' in {train} (all its "
        f"files were skipped as unreadable, e.g. {broken[0]}: empty file (0 bytes)); fix or "
        "replace them, or remove the class folder"]
    assert not (tmp_path / "run").exists()


def test_huge_images_are_decoded_at_a_reduced_size(folder, tmp_path):
    """Never all 64 megapixels at once: a JPEG is DCT-scaled while decoding, others reduced."""
    huge = folder / "train" / "ship" / "huge.jpg"
    check = images.probe(str(huge))
    assert (check.reason, check.native) == (None, False)  # PIL decodes it, not TensorFlow
    assert images.probe(str(first_plain(folder))).native  # small plain JPEGs stay TensorFlow's
    with Image.open(huge) as image:
        small = images.reduced(image, 32, 32)
        assert all(64 <= side < 128 for side in small.size), small.size
    Image.new("P", (6000, 5000), 3).save(tmp_path / "wide.png")  # palette: reduce() needs RGBA
    with Image.open(tmp_path / "wide.png") as image:
        small = images.reduced(image, 32, 32)
        assert small.mode == "RGBA" and all(64 <= side < 128 for side in small.size), small.size
