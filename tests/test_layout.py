"""The package layout keeps its rules: no private name used across modules, Keras internals in
keras_compat.py only, run-directory file names in runs.py only, one atomic writer, and a
docstring on every package saying what it owns."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cnnctl"
MODULES = sorted(PACKAGE.rglob("*.py"))


def name_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_uses(path: Path) -> list[str]:
    """`from cnnctl.x import _y` and `alias._y` where alias is a cnnctl module imported here."""
    tree = ast.parse(path.read_text())
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cnnctl"):
            for a in node.names:
                if a.name.startswith("_") and a.name != "__version__":
                    found.append(f"{node.lineno}: from {node.module} import {a.name}")
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("cnnctl"):
                    aliases[(a.asname or a.name).split(".")[0]] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_a_private_name_of_another():
    used = {name_of(p): private_uses(p) for p in MODULES}
    assert {m: u for m, u in used.items() if u} == {}


def test_keras_internals_are_touched_in_keras_compat_only():
    found = [f"{name_of(p)}:{n}" for p in MODULES for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\bkeras\.src\b|\._swap_variables|_ema_weights_in_model|seed_generator_state",
                          line) and p.name != "keras_compat.py"]
    assert found == []


RUN_FILES = ("config.yaml", "source_config.yaml", "class_names.json", "metrics.json", "history.csv",
             "curves.png", "environment.json", "best.keras", "last.keras", "failed.json",
             "report.html", "ckpt-", "state-")


def test_run_directory_file_names_are_written_in_runs_py_only():
    found = []
    for path in MODULES:
        if path.name == "runs.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and any(
                    re.search(rf"(^|[^\w]){re.escape(f)}", node.value) and
                    not node.value.startswith((" ", "`")) and "\n" not in node.value
                    and len(node.value) < 40 for f in RUN_FILES):
                found.append(f"{name_of(path)}:{node.lineno}: {node.value!r}")
    assert found == []


def test_one_atomic_writer():
    renames = [f"{name_of(p)}:{n}" for p in MODULES for n, line in enumerate(p.read_text().splitlines(), 1)
               if re.search(r"os\.replace\(|os\.rename\(|\.rename\(|\.replace\(tmp", line)]
    # cnnctl.train.lock renames a stale lock aside to take it over; it writes no file that way
    assert renames and all(r.startswith(("cnnctl.outputs:", "cnnctl.train.lock:"))
                           for r in renames), renames


@pytest.mark.parametrize("package", ["config", "model", "data", "train", "use"])
def test_every_stage_package_says_what_it_owns(package):
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    assert doc and len(doc.splitlines()) == 1, package
    for module in (PACKAGE / package).glob("*.py"):
        assert ast.get_docstring(ast.parse(module.read_text())), module
