"""`cnnctl data check`: what a config's data set holds, before any training: images per class
and split, image sizes and modes, files that cannot be read, and duplicates across splits."""

from __future__ import annotations

import collections
import functools
import hashlib

import numpy as np

from cnnctl.data import images
from cnnctl.data import sources
from cnnctl.data.splits import SPLITS, training_splits
from cnnctl.config import load as config_lib
from cnnctl.errors import CnnctlError

TOP_SIZES = 10  # image sizes listed per split, most common first
_ARRAY_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def check(config, progress=None) -> dict:
    """Report on the data set of a config, split as training splits it.

    Every file of a folder source is decoded once (as training does before it starts) and
    hashed; in-memory sources (keras, npz, fixed-size tfds) give their array shapes and hash
    each image's pixels. `max_*_samples` and `validation_split` apply as in training.

    Args:
        config: a `cnnctl.config.load.LoadedConfig` (its file is named in the report) or `Config`.
        progress: called as progress(split, files checked, files in all) while a split's image
            files are read.

    Returns:
        {"config", "source", "class_names", "splits": {split: {"count", "classes", "sizes",
        "distinct_sizes", "modes", "formats", "unreadable", ["shape", "dtype"]}}, "unreadable":
        [{"path", "reason"}], "duplicates": [{"sha256", "paths", "splits", "classes"}],
        "warnings": [...]}. Counts are of readable images; sizes are "WxH" (top `TOP_SIZES`).

    Raises:
        CnnctlError: the config has no data section, or the data cannot be found or listed
            (missing or empty folders, empty class folders): the errors training would give.
    """
    cfg = getattr(config, "config", config)
    data = cfg.data
    if data is None:
        raise CnnctlError("the config has no `data:` section; add one, e.g. "
                          "data: {source: keras, name: mnist}")
    carve = data.validation_split > 0
    need = {"train", "test"} | (set() if carve else {"val"})
    with config_lib.located(config):
        class_names, parts = sources.SOURCES[data.source](data, need)
        splits = _training_splits(parts, data, cfg.train.seed)
    report = {"config": str(getattr(config, "file", "")) or None, "source": data.source,
              "class_names": list(class_names), "splits": {}, "unreadable": [],
              "duplicates": [], "warnings": []}
    seen: dict[str, list[tuple[str, str, str]]] = collections.defaultdict(list)
    for split, (part, origin, index) in splits.items():
        summary, unreadable, hashes = _describe(
            part, origin, index, class_names,
            None if progress is None else functools.partial(progress, split))
        report["splits"][split] = summary
        report["unreadable"] += unreadable
        for name, label, digest in hashes:
            seen[digest].append((name, split, class_names[label]))
    report["unreadable"].sort(key=lambda u: u["path"])
    report["duplicates"] = _duplicates(seen, class_names)
    report["warnings"] = _warnings(report)
    return report


def _training_splits(parts: dict, data, seed: int) -> dict:
    """split -> (the part, the source split its images come from, their index there), after
    max_*_samples and validation_split, by `splits.training_splits` as training splits them:
    it splits parts whose files are their positions, so each image keeps its source index."""
    positions = training_splits({name: sources.Part(part.labels, files=np.arange(len(part)))
                                 for name, part in parts.items()}, data, seed)
    origins = {name: name for name in parts}
    if "val" in positions and "val" not in parts:
        origins["val"] = "train"
    return {split: (parts[origins[split]].take(positions[split].files), origins[split],
                    positions[split].files) for split in SPLITS if split in positions}


def _describe(part: sources.Part, origin: str, index: np.ndarray, class_names: list[str],
              progress=None):
    """One split's summary, its unreadable files, and (name, label, sha256) of each image."""
    sizes, modes, formats = collections.Counter(), collections.Counter(), collections.Counter()
    unreadable, hashes, labels = [], [], []
    extra = {}
    if part.images is not None:
        x = part.images
        channels = x.shape[3] if x.ndim == 4 else 1
        sizes[f"{x.shape[2]}x{x.shape[1]}"] = len(x)
        modes[_ARRAY_MODES.get(channels, f"{channels} channels")] = len(x)
        extra = {"shape": list(x.shape), "dtype": str(x.dtype)}
        for i, image, label in zip(index, x, part.labels):
            digest = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
            hashes.append((f"{origin}[{i}]", int(label), digest))
        labels = part.labels
    else:
        if part.encoded:  # tfds images of varying size, still encoded
            checks = [images.probe_bytes(bytes(b)) for b in part.files]
            names = [f"{origin}[{i}]" for i in index]
            digests = [hashlib.sha256(bytes(b)).hexdigest() for b in part.files]
        else:
            checks = images.probe_all([str(f) for f in part.files], digest=True,
                                      progress=progress)
            names = [str(f) for f in part.files]
            digests = [c.sha256 for c in checks]
        for name, label, check, digest in zip(names, part.labels, checks, digests):
            if check.reason is not None:
                unreadable.append({"path": name, "reason": check.reason})
                continue
            labels.append(label)
            hashes.append((name, int(label), digest))
            sizes[f"{check.size[0]}x{check.size[1]}"] += 1
            modes[check.mode] += 1
            formats[check.format + (" (animated)" if check.frames > 1 else "")] += 1
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    summary = {"count": int(counts.sum()),
               "classes": dict(zip(class_names, counts.tolist())),
               "sizes": dict(sizes.most_common(TOP_SIZES)),
               "distinct_sizes": len(sizes),
               "modes": dict(modes.most_common()),
               "formats": dict(formats.most_common()),
               "unreadable": len(unreadable), **extra}
    return summary, unreadable, hashes


def _duplicates(seen: dict, class_names: list[str]) -> list[dict]:
    """Groups of identical images, those in more than one split first."""
    groups = []
    for digest, entries in seen.items():
        if len(entries) < 2:
            continue
        in_splits = {split for _, split, _ in entries}
        in_classes = {name for _, _, name in entries}
        groups.append({"sha256": digest, "paths": [name for name, _, _ in entries],
                       "splits": [s for s in SPLITS if s in in_splits],
                       "classes": [c for c in class_names if c in in_classes]})
    return sorted(groups, key=lambda g: (len(g["splits"]) == 1, g["paths"][0]))


def _warnings(report: dict) -> list[str]:
    """What would make training misleading: empty classes, leaks between splits, conflicts."""
    found = []
    train = report["splits"].get("train")
    if train is not None:
        empty = [name for name, n in train["classes"].items() if n == 0]
        if empty:
            found.append(f"train: no readable images of class {', '.join(empty)}; the model "
                         "cannot learn it: add images or remove the class")
    leaks = [g for g in report["duplicates"] if len(g["splits"]) > 1]
    if leaks:
        found.append(f"{len(leaks)} image(s) are in more than one split "
                     f"({', '.join(sorted({'/'.join(g['splits']) for g in leaks}))}): validation "
                     "and test accuracy will be too optimistic; remove the copies")
    conflicts = [g for g in report["duplicates"] if len(g["classes"]) > 1]
    if conflicts:
        found.append(f"{len(conflicts)} image(s) appear under more than one class, e.g. "
                     f"{', '.join(conflicts[0]['paths'])}")
    if report["unreadable"]:
        found.append(f"{len(report['unreadable'])} file(s) cannot be read; training and predict "
                     "skip them")
    return found


def format_report(report: dict) -> str:
    """The report as text: a table of images per class and split, then sizes, modes,
    unreadable files, duplicates and warnings."""
    names = report["class_names"]
    splits = report["splits"]
    title = f"data: {report['source']}, {len(names)} classes"
    lines = [f"{title} ({report['config']})" if report.get("config") else title, ""]
    shown = names if len(names) <= 12 else []
    header = ["split", "images", *shown, "unreadable"]
    rows = [[split, s["count"], *(s["classes"][c] for c in shown), s["unreadable"]]
            for split, s in splits.items()]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(f"{str(v):<{w}}" if i == 0 else f"{str(v):>{w}}"
                               for i, (v, w) in enumerate(zip(row, widths))).rstrip())
    lines.append("")
    for split, s in splits.items():
        more = s["distinct_sizes"] - len(s["sizes"])
        sizes = ", ".join(f"{k} {v}" for k, v in s["sizes"].items())
        lines.append(f"{split}: sizes {sizes or '-'}{f' (+{more} more)' if more > 0 else ''}")
        indent = " " * len(split)
        lines.append(f"{indent}  modes {_pairs(s['modes'])}")
        if s["formats"]:
            lines.append(f"{indent}  formats {_pairs(s['formats'])}")
        if "shape" in s:
            lines.append(f"{indent}  array {s['shape']} {s['dtype']}")
    if report["unreadable"]:
        lines += ["", f"unreadable ({len(report['unreadable'])}):"]
        lines += [f"  {u['path']}: {u['reason']}" for u in report["unreadable"]]
    if report["duplicates"]:
        groups = len(report["duplicates"])
        lines += ["", f"duplicates ({groups} group{'' if groups == 1 else 's'} of identical "
                      "images):"]
        for group in report["duplicates"][:20]:
            paths, more = group["paths"][:5], len(group["paths"]) - 5
            lines.append(f"  {'/'.join(group['splits'])}: {', '.join(paths)}"
                         + (f", ... {more} more" if more > 0 else ""))
        if len(report["duplicates"]) > 20:
            lines.append(f"  ... {len(report['duplicates']) - 20} more (see --json)")
    if report["warnings"]:
        lines += ["", "warnings:"] + [f"  {w}" for w in report["warnings"]]
    return "\n".join(lines)


def _pairs(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"
