"""What a run's data was, in a few numbers: enough to tell, when a run is resumed, that the images
behind it changed (files removed, added or rewritten, classes renamed), cheap enough to take at
every backup.

A fingerprint is a JSON object: the class names, per split the number of images and of each
class, the steps of a training epoch, and per split of image files a SHA-256 of the sorted file
names with their sizes. In-memory data (keras.datasets, npz) is described by its counts.
"""

from __future__ import annotations

import hashlib
import os


def of(parts: dict, class_names: list[str], steps_per_epoch: int) -> dict:
    """The fingerprint of the splits `parts` (split name -> `sources.Part`)."""
    import numpy as np

    splits = {}
    for name, part in parts.items():
        entry = {"images": len(part),
                 "per_class": np.bincount(part.labels, minlength=len(class_names)).tolist()}
        if part.files is not None and not part.encoded:
            entry["files_sha256"] = _files_digest([str(f) for f in part.files])
        splits[name] = entry
    return {"class_names": list(class_names), "splits": splits,
            "steps_per_epoch": steps_per_epoch}


def _files_digest(files: list[str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        try:
            size = os.stat(path).st_size
        except OSError:
            size = -1
        digest.update(f"{path}\t{size}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def differences(old: dict, new: dict) -> list[str]:
    """What changed from fingerprint `old` to `new`, in words ([] when nothing did)."""
    changed = []
    if old.get("class_names") != new.get("class_names"):
        changed.append(f"classes {_names(old.get('class_names'))} -> {_names(new.get('class_names'))}")
    before, after = old.get("splits", {}), new.get("splits", {})
    names = new.get("class_names") or []
    known = set(before) | set(after)
    for split in [s for s in ("train", "val", "test") if s in known] + sorted(
            known - {"train", "val", "test"}):
        a, b = before.get(split), after.get(split)
        if a is None or b is None:
            changed.append(f"{split} split {'added' if a is None else 'removed'}")
            continue
        if a.get("images") != b.get("images"):
            changed.append(f"{split} images {a.get('images'):,} -> {b.get('images'):,}")
        elif a.get("per_class") != b.get("per_class") and old.get("class_names") == names:
            moved = [f"{n} {x:,} -> {y:,}" for n, x, y in zip(names, a["per_class"], b["per_class"])
                     if x != y]
            changed.append(f"{split} images per class: {', '.join(moved[:3])}"
                           + (", ..." if len(moved) > 3 else ""))
        elif "files_sha256" in a and a.get("files_sha256") != b.get("files_sha256"):
            changed.append(f"{split} image files renamed, replaced or resized (same count)")
    if not changed and old.get("steps_per_epoch") != new.get("steps_per_epoch"):
        changed.append(f"steps per epoch {old.get('steps_per_epoch')} -> {new.get('steps_per_epoch')}")
    return changed


def _names(names) -> str:
    if not isinstance(names, list):
        return "?"
    shown = ", ".join(map(str, names[:4]))
    return f"[{shown}{', ...' if len(names) > 4 else ''}] ({len(names)})"
