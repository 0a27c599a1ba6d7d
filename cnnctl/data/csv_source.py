"""Image paths and labels listed in CSV / TSV files (config `data.source: csv`): each file read
and checked row by row, every problem named by the file and its line, before any image is
decoded. The image files then go through the same checks and decoding as a folder's."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
from pathlib import Path

import numpy as np

from cnnctl import user_files
from cnnctl.data.sources import Part, plural, shown_path
from cnnctl.errors import ConfigValueError

KEYS = {"train": "data.train_csv", "val": "data.val_csv", "test": "data.test_csv"}
MAX_CSV_BYTES = user_files.MiB * 1024  # 1 GiB: millions of rows; a bound on what is read
SHOWN_PROBLEMS = 5  # further problem lines named after the first one
_INDEX = re.compile(r"[0-9]+")


@dataclasses.dataclass(frozen=True)
class Row:
    """One image of a label file: its line there, the path it leads to, its label as written."""

    line: int
    path: str
    label: str


class _Problems:
    """The problems of one label file, each as `FILE:LINE: message`; `fail` raises the first
    one, with the lines of the others, as the error of the file's config key."""

    def __init__(self, file: Path, key: str):
        self.file, self.key, self.found = file, key, []

    def add(self, line: int, message: str) -> None:
        self.found.append((line, message))

    def fail(self) -> None:
        if not self.found:
            return
        self.found.sort(key=lambda p: p[0])
        line, message = self.found[0]
        more = ""
        if len(self.found) > 1:
            lines = [str(n) for n, _ in self.found[1:SHOWN_PROBLEMS + 1]]
            rest = len(self.found) - 1 - len(lines)
            more = (f" ({plural(len(self.found) - 1, 'more problem')} in this file, on line"
                    f"{'s' if len(self.found) > 2 else ''} {', '.join(lines)}"
                    f"{f' and {rest} more' if rest else ''})")
        raise ConfigValueError(self.key, f"{self.file}:{line}: {message}{more}")


def csv_source(data, need) -> tuple[list[str], dict[str, Part]]:
    """train_csv, val_csv, test_csv: image file paths and their labels, in the files' row order,
    not yet decoded. Class names: `data.class_names`, else train_csv's labels (sorted; 0..N
    when they are all integers).

    Raises:
        ConfigValueError: a file is missing, unreadable or empty, lacks a column, or has a row
            with an empty field, an unknown label, a path listed twice, a path that leads out of
            the file's folder or an image file that does not exist.
    """
    if data.val_csv and data.validation_split > 0:
        raise ConfigValueError("data.val_csv", "set either val_csv or validation_split, not both")
    tables = {"train": read_rows(data.train_csv, data, KEYS["train"], data.class_names)}
    class_names = list(data.class_names or _class_names([r.label for r in tables["train"]]))
    for part in ("val", "test"):
        file = getattr(data, f"{part}_csv")
        if file and part in need:
            tables[part] = read_rows(file, data, KEYS[part], class_names)
    index = {name: i for i, name in enumerate(class_names)}
    parts = {part: Part(np.array([_label(r.label, index) for r in rows], np.int64),
                        files=np.array([r.path for r in rows]))
             for part, rows in tables.items()}
    return class_names, parts


def csv_class_names(data) -> list[str] | None:
    """csv_source's class names, from the config or train_csv alone (no image is looked at);
    None where the file cannot be read as a label file."""
    if data.class_names:
        return list(data.class_names)
    try:
        rows = read_rows(data.train_csv, data, KEYS["train"], None, files=False)
    except ConfigValueError:
        return None
    return _class_names([r.label for r in rows])


def read_rows(name: str, data, key: str, class_names: list[str] | None,
              files: bool = True) -> list[Row]:
    """The rows of a label file, each checked: both columns there and filled in, a label of
    `class_names` (where they are known), no path twice, none leading out of the file's folder
    and, with `files`, each naming an existing file.

    Raises:
        ConfigValueError: the first problem, `FILE:LINE: ...`, and the lines of the others.
    """
    file = Path(name).expanduser()
    wanted = (f"give a CSV file with a header row ({data.path_column},{data.label_column}) and "
              "one row per image")
    if not file.is_file():
        what = ("is a folder, not a file" if file.is_dir() else
                "not found" if not file.exists() else "")
        if what:
            raise ConfigValueError(key, f"{shown_path(file)} {what}; {wanted}")
    delimiter = data.delimiter or ("\t" if file.suffix.lower() in (".tsv", ".tab") else ",")
    shown_delimiter = "<tab>" if delimiter == "\t" else delimiter
    try:
        text = user_files.read_bytes(file, MAX_CSV_BYTES, "a label file").decode("utf-8-sig")
        text = text.replace("\r\n", "\n").replace("\r", "\n")  # as read_text's newline mode
    except user_files.UnfitFile as e:
        raise ConfigValueError(key, f"{shown_path(file)}: {e.reason}; {wanted}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigValueError(key, f"cannot read {file} as UTF-8 text ({e}); save it as UTF-8 "
                               "CSV") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    problems = _Problems(file, key)
    try:
        header = next(reader, None)
        records, line = [], reader.line_num + 1
        for record in reader:
            records.append((line, record))
            line = reader.line_num + 1
    except csv.Error as e:
        raise ConfigValueError(key, f"{file}:{reader.line_num}: not readable as CSV ({e}); "
                               "check its quotes") from None
    columns = [c.strip() for c in header or []]
    if not any(columns):
        raise ConfigValueError(key, f"{file}:1: the file is empty; it needs a header row "
                               f"({data.path_column}{shown_delimiter}{data.label_column}) and "
                               "one row per image")
    for column, option in ((data.path_column, "path_column"), (data.label_column, "label_column")):
        if column not in columns:
            raise ConfigValueError(key, f"{file}:1: no column {column!r} in the header (columns: "
                                   f"{', '.join(columns)}); name it {column!r} or set "
                                   f"data.{option} to the header of that column")
    at_path, at_label = columns.index(data.path_column), columns.index(data.label_column)
    folder = file.parent
    index = None if class_names is None else {name: i for i, name in enumerate(class_names)}
    rows: list[Row] = []
    first_line: dict[str, int] = {}
    for line, record in records:
        if not any(field.strip() for field in record):
            continue  # a blank line
        if len(record) != len(columns):
            problems.add(line, f"{plural(len(record), 'field')}, the header has {len(columns)}; "
                               f"quote a field that holds the delimiter {shown_delimiter!r}")
            continue
        written, label = record[at_path].strip(), record[at_label].strip()
        if not written or not label:
            column = data.path_column if not written else data.label_column
            problems.add(line, f"empty {column!r}; fill it in or remove the row")
            continue
        if index is not None and _label(label, index) is None:
            shown = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "")
            where = "data.class_names" if data.class_names else "the labels of data.train_csv"
            problems.add(line, f"unknown label {label!r}: not one of {where} ({shown}) nor a "
                               f"class index below {len(class_names)}; fix the row"
                               + ("" if data.class_names else " or list every class in "
                                  "data.class_names"))
            continue
        path = os.path.normpath(written if os.path.isabs(written) else folder / written)
        if not os.path.isabs(written) and os.path.normpath(written).split(os.sep)[0] == os.pardir:
            problems.add(line, f"{written} leads out of {folder}, the file's folder; give a path "
                               "inside it, or an absolute path")
            continue
        if path in first_line:
            problems.add(line, f"{written} is listed twice (first on line {first_line[path]}); "
                               "remove one of the rows")
            continue
        first_line[path] = line
        if files and not os.path.isfile(path):
            what = "is a folder, not an image file" if os.path.isdir(path) else "not found"
            problems.add(line, f"image file {written} {what} ({path}); fix the path (relative to "
                               f"{folder}) or remove the row")
            continue
        rows.append(Row(line, path, label))
    problems.fail()
    if not rows:
        raise ConfigValueError(key, f"{file}:2: no rows after the header; add one row per "
                               f"image ({data.path_column}{shown_delimiter}{data.label_column})")
    return rows


def _class_names(labels: list[str]) -> list[str]:
    """Sorted label names, or "0".."N" when every label is a class index (as .npz labels are)."""
    if all(_INDEX.fullmatch(label) for label in labels):
        return [str(i) for i in range(max(int(label) for label in labels) + 1)]
    return sorted(set(labels))


def _label(label: str, index: dict[str, int]) -> int | None:
    """A label's class (`index`: class name -> class): the class of that name, else the class
    of that index; None if neither."""
    if label in index:
        return index[label]
    if _INDEX.fullmatch(label) and int(label) < len(index):
        return int(label)
    return None
