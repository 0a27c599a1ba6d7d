"""The machine a benchmark ran on: CPU, cores, memory, GPUs, OS and library versions, read
without importing any of the libraries."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

# distribution names to report, in order; the first installed of each group is shown
PACKAGES = (("tensorflow", "tensorflow-cpu", "tf-nightly"), ("keras",), ("jax",), ("jaxlib",),
            ("torch",), ("numpy",))


def info() -> dict:
    """What this machine is and which library versions its Python has."""
    return {
        "cpu": _cpu_model(),
        "cores": (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                  else os.cpu_count()),
        "ram_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "gpus": _gpus(),
        "os": _os_name(),
        "python": platform.python_version(),
        "packages": {"cnnctl": _cnnctl_version(),
                     **{name: version for name, version in map(_version, PACKAGES) if version}},
    }


def kind(machine: dict) -> str:
    """A short label for the kind of machine, e.g. `cpu-amd-epyc-2c` or
    `gpu-nvidia-h100-80gb-hbm3`: results of one kind replace each other in BENCHMARKS.md."""
    if machine["gpus"]:
        count = len(machine["gpus"])
        name = _slug(machine["gpus"][0].split(",")[0])
        return f"gpu-{name}" + (f"-x{count}" if count > 1 else "")
    return f"cpu-{_slug(machine['cpu'])}-{machine['cores']}c"


def markdown(machine: dict) -> str:
    """The machine as a short markdown list."""
    gpus = "; ".join(machine["gpus"]) or "none"
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    return (f"- CPU: {machine['cpu']}, {machine['cores']} cores; RAM "
            f"{machine['ram_bytes'] / 2**30:.1f} GiB; GPU: {gpus}\n"
            f"- OS: {machine['os']}; Python {machine['python']}\n"
            f"- {packages}")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    """`name, memory` of each NVIDIA GPU that nvidia-smi lists."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _os_name() -> str:
    try:
        distribution = platform.freedesktop_os_release().get("PRETTY_NAME")
    except OSError:
        distribution = None
    kernel = f"{platform.system()} {platform.release()}"
    return f"{distribution} ({kernel})" if distribution else kernel


def _cnnctl_version() -> str:
    """cnnctl's version and, in a git checkout, its commit (and whether cnnctl/ or configs/
    differ from it)."""
    try:
        version = importlib.metadata.version("cnnctl")
    except importlib.metadata.PackageNotFoundError:
        version = "(not installed)"
    repo = Path(__file__).resolve().parents[1]

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)

    try:
        commit, status = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain",
                                                                  "--", "cnnctl", "configs")
    except OSError:  # no git
        return version
    if commit.returncode != 0:
        return version
    modified = ", working tree modified" if status.stdout.strip() else ""
    return f"{version} (commit {commit.stdout.strip()}{modified})"


def _version(names: tuple[str, ...]) -> tuple[str, str | None]:
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return names[0], None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
