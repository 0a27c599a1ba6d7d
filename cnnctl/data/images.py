"""Image files and arrays turned into model input: finding, checking, decoding, resizing."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
import re
import stat
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnctl.data import workers as workers_lib
from cnnctl.errors import CnnctlError, ConfigValueError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """What a model takes: `height` x `width` x `channels`, from images decoded with
    `decode_channels` (1: grayscale, 3: RGB; grayscale is repeated when the model wants 3)."""

    height: int
    width: int
    channels: int
    decode_channels: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)


def _yaml_list(shape) -> str:
    return "[" + ", ".join("null" if d is None else str(d) for d in shape) + "]"


def image_spec(input_shape, image_size=None, color_mode: str | None = None) -> ImageSpec:
    """How to convert images for a model with this input shape.

    Args:
        input_shape: the model's (height, width, channels); channels 1 or 3.
        image_size: `data.image_size`; must equal the model's height and width when given.
        color_mode: `data.color_mode`; default from the channels. `grayscale` with a 3-channel
            model reads images as grey and repeats them into 3 channels.

    Raises:
        CnnctlError: the shapes or colour mode do not fit together.
    """
    shape = tuple(None if d is None else int(d) for d in input_shape)
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise ConfigValueError("model.input_shape", f"images need [height, width, channels] "
                               f"with 1 (grayscale) or 3 (rgb) channels; got {list(shape)}")
    if None in shape[:2]:  # a model of any image size: the data says which one to load
        if image_size is None:
            raise ConfigValueError("data.image_size", (
                f"is needed: model.input_shape {_yaml_list(shape)} leaves the image size open, and "
                "images are loaded at one size; set data.image_size: [height, width]"))
        fixed = [d for d, size in zip(shape[:2], image_size) if d is not None and d != size]
        if fixed:
            raise ConfigValueError("data.image_size", f"{list(image_size)} differs from "
                                   f"model.input_shape {_yaml_list(shape)}")
        shape = (*image_size, shape[2])
    height, width, channels = shape
    if image_size is not None and tuple(image_size) != (height, width):
        raise ConfigValueError("data.image_size", f"{list(image_size)} differs from model.input_shape "
                          f"{list(shape)}; images are resized to the model's input: remove "
                          f"data.image_size or set it to {[height, width]}")
    color_mode = color_mode or ("grayscale" if channels == 1 else "rgb")
    if color_mode == "rgb" and channels == 1:
        raise ConfigValueError("data.color_mode", f"rgb gives 3 channels but model.input_shape "
                          f"{list(shape)} has 1; use color_mode: grayscale or 3 input channels")
    return ImageSpec(height, width, channels, 1 if color_mode == "grayscale" else 3)


# --------------------------------------------------------------------------- files
def is_image_file(name: str) -> bool:
    """An image by its extension, in any case (.jpg, .JPG); hidden files (._x.jpg) are not."""
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files under a folder, recursively, in sorted order.

    Symbolic links are followed, but each real folder is entered once, so a link back to a
    parent (a loop) or a second link to a folder lists no file twice. A sub-folder that cannot
    be read is listed itself, in place of its files, so that callers report it: `probe` gives
    its reason.
    """
    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder, followlinks=True,
                                     onerror=lambda error: found.append(error.filename)):
        where = os.stat(root)
        if (where.st_dev, where.st_ino) in seen:
            dirs.clear()
            continue
        seen.add((where.st_dev, where.st_ino))
        dirs.sort()
        found.extend(os.path.join(root, f) for f in sorted(files) if is_image_file(f))
    return found


@dataclasses.dataclass(frozen=True)
class FileCheck:
    """What `probe` found out about one file: `reason` is None when it can be used."""

    path: str
    reason: str | None = None  # why the file cannot be used
    native: bool = False  # TensorFlow decodes it in the pipeline (else PIL, see `tfdata.decode_fn`)
    format: str | None = None  # as PIL names it: JPEG, PNG, GIF, BMP, WEBP, ...
    mode: str | None = None  # as PIL names it: RGB, L, RGBA, P, CMYK, I;16, ...
    size: tuple[int, int] | None = None  # (width, height)
    frames: int = 1  # an animated image gives its first frame
    sha256: str | None = None  # of the file's bytes, when asked for
    # uint8 [H, W, C] at the model's size, when asked for (`keep`) and these are exactly the
    # pixels `tfdata.decode_fn` gives: the decode of the check is then the decode of the training data
    pixels: np.ndarray | None = None


# Above this many pixels an image is decoded by PIL at a reduced size (JPEG by DCT scaling,
# never at full size) instead of by TensorFlow at full size: a 8000x8000 photo then costs a few
# MB, not the 0.8 GB of its float32 pixels in the resize.
LARGE_PIXELS = 4096 * 4096

# PIL refuses images over 2 * Image.MAX_IMAGE_PIXELS (~179 megapixels) as possible decompression
# bombs, and `probe` reports them. Between 1x and 2x it only warns: those are genuine large
# photos, decoded at a reduced size, so the warning would only be noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"))


def probe(path: str, digest: bool = False, keep: ImageSpec | None = None) -> FileCheck:
    """Check that a file is an image the pipeline can decode, by decoding it once with PIL.

    Never raises for a bad file: a file that is missing, a broken or looping link, unreadable,
    not a regular file (a pipe would block the reader forever), empty, not an image, truncated,
    damaged or too large gets a one-line reason. Decodable files say whether TensorFlow decodes
    them itself (PNG, RGB or grey JPEG, not huge) or PIL does (CMYK JPEG, BMP, GIF, WebP, huge).

    Args:
        path: the file.
        digest: also compute the SHA-256 of its bytes (to find duplicates).
        keep: the model's image spec: keep the decoded pixels (`FileCheck.pixels`) where they
            need no resizing and equal what `tfdata.decode_fn` gives for the file.
    """
    try:
        info = os.stat(path)
    except OSError as e:
        return FileCheck(path, _os_reason(path, e))
    if stat.S_ISDIR(info.st_mode):
        try:
            os.scandir(path).close()
        except OSError as e:
            return FileCheck(path, f"cannot read the folder ({_strerror(e)})")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "a special file")
        return FileCheck(path, f"not a regular file ({kind})")
    if info.st_size == 0:
        return FileCheck(path, "empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return FileCheck(path, _os_reason(path, e))
    check = probe_bytes(data, keep)
    return dataclasses.replace(check, path=path, sha256=hashlib.sha256(data).hexdigest()
                               if digest and check.reason is None else None)


def probe_bytes(data: bytes, keep: ImageSpec | None = None) -> FileCheck:
    """`probe` for an encoded image in memory; `path` is left empty."""
    pixels = None
    try:
        image = Image.open(io.BytesIO(data))
        if image.format == "PNG":
            # PIL's decoder passes a PNG that lacks its end or has a bad checksum, TensorFlow's
            # fails on it in the middle of training: verify() checks the whole file.
            with image:
                image.verify()
            image = Image.open(io.BytesIO(data))  # verify() leaves it unusable
        with image:
            kind, mode, (width, height) = image.format, image.mode, image.size
            frames = getattr(image, "n_frames", 1)
            large = width * height > LARGE_PIXELS
            native = not large and (kind == "PNG" or (kind == "JPEG" and mode in ("L", "RGB")))
            keeping = (keep is not None and (width, height) == (keep.width, keep.height)
                       and not large and _same_pixels(kind, mode, native, keep.decode_channels))
            if large and kind == "JPEG":
                image.draft(None, (width // 8, height // 8))  # still reads every byte
            elif keeping and kind == "JPEG" and mode == "RGB" and keep.decode_channels == 1:
                image.draft("L", image.size)  # libjpeg's own grey output, as TensorFlow's
            image.load()
            if keeping:
                pixels = pil_to_array(image, keep.decode_channels)
                if keep.channels != keep.decode_channels:
                    pixels = np.repeat(pixels, keep.channels, axis=-1)
            if not native:  # PIL converts it in the pipeline: make sure it can
                corner = image.crop((0, 0, 1, 1))
                pil_to_array(corner, 1), pil_to_array(corner, 3)
    except UnidentifiedImageError:
        return FileCheck("", "not an image (unknown or damaged file format)")
    except Image.DecompressionBombError as e:
        pixels = [int(n) for n in re.findall(r"\d+", str(e))]
        return FileCheck("", f"image too large ({pixels[0] / 1e6:.0f} megapixels; PIL refuses "
                             f"more than {pixels[1] / 1e6:.0f} as a possible decompression bomb): "
                             "downscale it")
    except MemoryError:
        return FileCheck("", "image too large to decode in the memory available")
    except Exception as e:  # noqa: BLE001 -- PIL's decoders raise all kinds on damaged files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "truncated" in reason.lower():
            return FileCheck("", "truncated image (the file ends early)")
        return FileCheck("", f"damaged image: {reason}")
    return FileCheck("", None, native, kind, mode, (width, height), frames, pixels=pixels)


def _same_pixels(kind: str, mode: str, native: bool, channels: int) -> bool:
    """Whether PIL's decode of a file at the model's size gives exactly `tfdata.decode_fn`'s pixels.

    Files PIL decodes in the pipeline too (not native): always. JPEG: TensorFlow decodes with
    libjpeg's accurate integer DCT, as PIL does, grey output included. PNG: lossless, but
    TensorFlow's RGB-to-grey weights are not PIL's, so colour PNGs read as grey are left to
    TensorFlow (checked against TensorFlow 2.21 and Pillow in tests/data/test_tfdata.py).
    """
    if not native or kind == "JPEG":
        return True
    grey = mode in ("L", "LA", "I;16")
    return grey or (channels == 3 and mode in ("RGB", "RGBA", "P"))


def _strerror(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def _os_reason(path: str, error: OSError) -> str:
    """Why the operating system would not let a file be read, in words."""
    if isinstance(error, PermissionError):
        return "permission denied (cannot open the file); make it readable or remove it"
    if error.errno == errno.ELOOP:
        return "symbolic link loop (the link leads back to itself)"
    if isinstance(error, FileNotFoundError):
        return ("broken symbolic link (its target does not exist)" if os.path.islink(path)
                else "file not found")
    return f"cannot read the file ({_strerror(error)})"


# From this many files on, `probe_all` spreads them over one process per core: most of a probe
# is PIL's Python code (header parsing, modes), which threads would serialise on the GIL.
PROCESSES_FROM = 2000


# `probe_all` reports progress after this many files (or a chunk of a worker process).
PROGRESS_EVERY = 500


def probe_all(paths: list[str], digest: bool = False, keep: ImageSpec | None = None,
              progress: Callable[[int, int], None] | None = None) -> list[FileCheck]:
    """`probe` for many files, in order; in worker processes when there are many.

    Args:
        progress: called as progress(files checked, files in all) every few hundred files
            and once at the end.

    Raises:
        workers.Interrupted: SIGTERM or SIGINT while worker processes checked the files (they
            are stopped first, and die with the command however it ends).
    """
    workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                  else os.cpu_count() or 1, 16)
    report = progress or (lambda done, total: None)
    checks: list[FileCheck] = []
    if workers < 2 or len(paths) < PROCESSES_FROM:
        for i, p in enumerate(paths, 1):
            checks.append(probe(p, digest, keep))
            if i % PROGRESS_EVERY == 0 and i < len(paths):
                report(i, len(paths))
    else:
        # chunks of at most PROGRESS_EVERY files, and at least 8 per worker to spread the load
        chunk = min(-(-len(paths) // (workers * 8)), PROGRESS_EVERY)
        chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]

        def take(done: list[FileCheck]) -> None:
            checks.extend(done)
            if len(checks) < len(paths):
                report(len(checks), len(paths))

        workers_lib.map_in_processes(_probe_chunk, [(c, digest, keep) for c in chunks], workers,
                                     f"checking the images of {_folder_of(paths)}", each=take)
    if paths:
        report(len(paths), len(paths))
    return checks


def _folder_of(paths: list[str]) -> str:
    """The folder that holds all these files, for a message."""
    try:
        return os.path.commonpath([os.path.dirname(p) for p in paths]) or "."
    except ValueError:  # absolute and relative paths together
        return "the listed files"


def _probe_chunk(paths: list[str], digest: bool, keep: ImageSpec | None) -> list[FileCheck]:
    return [probe(p, digest, keep) for p in paths]


def inspect(path: str) -> tuple[bool, str | None]:
    """`probe` as (TensorFlow can decode it itself, None) or (False, why it cannot be used)."""
    check = probe(path)
    return check.native, check.reason


def inspect_all(paths: list[str]) -> list[tuple[bool, str | None]]:
    """`inspect` for many files, in threads."""
    return [(check.native, check.reason) for check in probe_all(paths)]


def pil_to_array(image: Image.Image, channels: int) -> np.ndarray:
    """A PIL image of any mode as uint8 [H, W, channels]; 16-bit values keep their top 8 bits."""
    if image.mode.startswith("I") or image.mode == "F":
        array = np.asarray(image)
        if image.mode != "F":
            array = array.astype(np.int64) >> 8
        array = np.clip(array, 0, 255).astype(np.uint8)[..., None]
        return np.repeat(array, 3, axis=-1) if channels == 3 else array
    if image.mode == ("L" if channels == 1 else "RGB"):
        array = np.asarray(image)
        return array[..., None] if channels == 1 else array
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "palette images with transparency..." is expected
        array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    return array[..., None] if channels == 1 else array


def reduced(image: Image.Image, width: int, height: int) -> Image.Image:
    """An opened image, decoded at no less than twice `width` x `height` when it is larger than
    that: a JPEG by DCT scaling (it is never decoded at full size), others decoded and then
    box-averaged. Call before `image.load()`; the final resize to the model's size is the
    pipeline's."""
    scale = min(image.size[0] // (2 * width), image.size[1] // (2 * height))
    if scale < 2:
        return image
    if image.format == "JPEG":
        image.draft(None, (2 * width, 2 * height))
        scale = min(image.size[0] // (2 * width), image.size[1] // (2 * height))
        if scale < 2:
            return image
    if image.mode not in ("L", "RGB", "RGBA", "CMYK", "LA", "I", "F"):  # reduce() needs one
        image = image.convert("I" if image.mode.startswith("I") else "RGBA")
    return image.reduce(scale)


def pil_decode(data, channels, height, width) -> np.ndarray:
    """Encoded bytes decoded by PIL at the model's size (`reduced`), uint8 [H, W, channels]."""
    data = data.item() if isinstance(data, np.ndarray) else data  # eager: a 0-d object array
    with Image.open(io.BytesIO(data)) as image:
        return pil_to_array(reduced(image, int(width), int(height)), int(channels))


# --------------------------------------------------------------------------- conversion
def fit_arrays(x: np.ndarray, spec: ImageSpec, where: str = "images") -> np.ndarray:
    """Convert an in-memory batch [N, H, W] or [N, H, W, C] (C = 1, 3, 4) to the model's size and
    channels, vectorised; uint8 stays uint8, other dtypes become float32.

    Raises:
        CnnctlError: the array is not a batch of images.
    """
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise CnnctlError(f"{where}: expected images [N, height, width] or [N, height, width, "
                          f"1|3|4], got shape {list(x.shape)}")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
    if x.shape[-1] == 4:
        x = x[..., :3]  # RGBA: the alpha channel is dropped, as PIL does for RGBA -> RGB
    to_grey = x.shape[-1] == 3 and spec.decode_channels == 1
    if to_grey or x.shape[1:3] != (spec.height, spec.width):
        from cnnctl.backend import keras  # keras.ops: on any backend, TensorFlow not needed

        ops, chunks = keras.ops, []
        for start in range(0, len(x), 2048):
            chunk = ops.convert_to_tensor(x[start:start + 2048], dtype="float32")
            if to_grey:
                chunk = ops.image.rgb_to_grayscale(chunk)
            if tuple(chunk.shape[1:3]) != (spec.height, spec.width):
                chunk = ops.image.resize(chunk, (spec.height, spec.width), antialias=True)
            chunk = ops.convert_to_numpy(chunk)
            if x.dtype == np.uint8:
                chunk = np.clip(np.round(chunk), 0, 255)
            chunks.append(chunk.astype(x.dtype))
        x = np.concatenate(chunks) if chunks else np.zeros((0, spec.height, spec.width,
                                                            spec.decode_channels), x.dtype)
    if x.shape[-1] == 1 and spec.channels == 3:
        x = np.repeat(x, 3, axis=-1)
    return x


def load_images(paths: list[str], input_shape, color_mode: str | None = None,
                ) -> tuple[np.ndarray, list[tuple[str, str | None]]]:
    """Decode image files the way training does, for a model with this input shape.

    Args:
        paths: image files of any size and mode (grey, RGB, RGBA, palette, CMYK, 16-bit).
        input_shape: the model's (height, width, channels).
        color_mode: `data.color_mode` the model was trained with, if any.

    Returns:
        A float32 batch [n, H, W, C] of the readable files (pixel values 0..255), and for every
        path, in order, (path, None) or (path, why it could not be read).
    """
    spec = image_spec(input_shape, color_mode=color_mode)
    checks = inspect_all([str(p) for p in paths])
    status = [(str(p), reason) for p, (_, reason) in zip(paths, checks)]
    good = [(str(p), native) for p, (native, reason) in zip(paths, checks) if reason is None]
    if not good:
        return np.zeros((0, *spec.shape), np.float32), status
    try:
        import tensorflow as tf
    except ImportError:  # JAX or PyTorch without TensorFlow: PIL, and keras.ops to resize
        return np.stack([_pil_image(path, spec) for path, _ in good]).astype(np.float32), status
    from cnnctl.data import tfdata

    decode = tfdata.decode_fn(spec)
    files = tf.data.Dataset.from_tensor_slices(([p for p, _ in good], [n for _, n in good]))
    images = files.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(len(good))
    return np.asarray(next(iter(images)), np.float32), status


def _pil_image(path: str, spec: ImageSpec) -> np.ndarray:
    """One file decoded by PIL and fitted to the model (`fit_arrays`), without TensorFlow: the
    same pixels as `tfdata.decode_fn` for an image of the model's size (PIL's JPEG decode is libjpeg's
    accurate integer DCT, as `_tf_decode` asks for); resized ones may differ by rounding, as
    keras.ops's antialiased resize is not TensorFlow's."""
    with Image.open(path) as image:
        pixels = pil_to_array(reduced(image, spec.width, spec.height), spec.decode_channels)
    return fit_arrays(pixels[None], spec, where=path)[0]


def load_encoded(blobs: list[bytes], input_shape, color_mode: str | None = None,
                 ) -> tuple[np.ndarray, list[str | None]]:
    """`load_images` for encoded images in memory (uploads): the same pixels for the same bytes.

    Each image is checked by `probe_bytes`, whose decode is kept where it equals the pipeline's
    (the model's size, see `_same_pixels`); the others are decoded by `tfdata.decode_fn` (PIL
    and `fit_arrays` without TensorFlow), as a file of these bytes would be.

    Returns:
        A float32 batch [n, H, W, C] of the readable images (0..255), and per blob, in order,
        None or why it could not be read.
    """
    spec = image_spec(input_shape, color_mode=color_mode)
    checks = [probe_bytes(blob, keep=spec) for blob in blobs]
    reasons = [check.reason for check in checks]
    pixels: dict[int, np.ndarray] = {i: check.pixels for i, check in enumerate(checks)
                                     if check.reason is None and check.pixels is not None}
    rest = [i for i, check in enumerate(checks) if check.reason is None and check.pixels is None]
    if rest:
        try:
            import tensorflow as tf
        except ImportError:  # JAX or PyTorch without TensorFlow: as `_pil_image`
            for i in rest:
                with Image.open(io.BytesIO(blobs[i])) as image:
                    decoded = pil_to_array(reduced(image, spec.width, spec.height),
                                           spec.decode_channels)
                pixels[i] = fit_arrays(decoded[None], spec, where=f"image {i + 1}")[0]
        else:
            from cnnctl.data import tfdata

            decode = tfdata.decode_fn(spec, encoded=True)
            data = tf.data.Dataset.from_tensor_slices(([blobs[i] for i in rest],
                                                       [checks[i].native for i in rest]))
            batch = next(iter(data.map(decode).batch(len(rest))))
            pixels.update(zip(rest, np.asarray(batch)))
    good = [pixels[i] for i in range(len(blobs)) if i in pixels]
    batch = (np.stack(good).astype(np.float32) if good
             else np.zeros((0, *spec.shape), np.float32))
    return batch, reasons
