"""`tune.space`: each entry's Optuna distribution, the check of every path against the schema
before the first trial, and a trial's drawn values as `--set` items."""

from __future__ import annotations

import math
from typing import Any

import optuna
import yaml

from cnnctl.config import load as config_lib
from cnnctl.config import schema as schema_lib
from cnnctl.errors import CnnctlError, ConfigError, ConfigIssue

PRIMITIVE = (type(None), bool, int, float, str)


def yaml_text(value: Any) -> str:
    """`value` as the YAML of a `--set path=VALUE` (floats keep a point: 1.0e-05, not 1e-05,
    which YAML reads as a string)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def encoded_choices(dist: schema_lib.SearchDistribution) -> list:
    """The choices as Optuna stores them: the values, or, where one is a list or a mapping (which
    Optuna cannot store), the YAML text of each."""
    if all(isinstance(c, PRIMITIVE) for c in dist.choice):
        return list(dist.choice)
    return [yaml_text(c) for c in dist.choice]


def distribution(dist: schema_lib.SearchDistribution) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of one entry."""
    kind = dist.kind
    if kind == "choice":
        return optuna.distributions.CategoricalDistribution(encoded_choices(dist))
    low, high = getattr(dist, kind)
    if kind in ("int_uniform", "log_int_uniform"):
        return optuna.distributions.IntDistribution(
            low, high, log=kind == "log_int_uniform", step=int(dist.step or 1))
    return optuna.distributions.FloatDistribution(low, high, log=kind == "log_uniform", step=dist.step)


def decoded(dist: schema_lib.SearchDistribution, stored: Any) -> Any:
    """The config value of a value Optuna stored for this entry."""
    if dist.kind == "choice" and not all(isinstance(c, PRIMITIVE) for c in dist.choice):
        return dist.choice[encoded_choices(dist).index(stored)]
    return stored


def overrides(space: dict[str, schema_lib.SearchDistribution], params: dict[str, Any]) -> list[str]:
    """The `--set` items of a trial's drawn values."""
    return [f"{path}={yaml_text(decoded(dist, params[path]))}" for path, dist in space.items()]


def probes(dist: schema_lib.SearchDistribution) -> list[tuple[str, Any]]:
    """The values of an entry that the check tries: the bounds and a value between (which, for
    a uniform over whole numbers, is not whole: a field of whole numbers refuses it), or every
    choice."""
    kind = dist.kind
    if kind == "choice":
        return [(f"choice {i + 1}" if len(dist.choice) > 1 else "choice", value) for i, value in enumerate(dist.choice)]
    low, high = getattr(dist, kind)
    if kind == "log_uniform":
        middle = math.sqrt(low * high)
    elif kind == "uniform":
        middle = low + dist.step * ((high - low) // dist.step // 2) if dist.step else (low + high) / 2
    else:
        middle = None
    found = [("low value", low), ("high value", high)]
    if middle is not None and middle not in (low, high):
        found.append(("value between", middle))
    return found


def check(loaded: config_lib.LoadedConfig) -> None:
    """Every path of tune.space exists and takes every value the entry can draw (its bounds, a
    value between, each choice), as the schema judges, with the `--set` items of the command.

    Raises:
        ConfigError: at the entry's line in tune.space, one line per entry that fails.
    """
    tune = loaded.config.tune
    issues = []
    for path, dist in tune.space.items():
        where = ("tune", "space", path)
        if path.split(".")[0].split("[")[0] == "tune":
            issues.append(loaded.source.issue(where, "a trial cannot change tune: itself; search "
                                                     "over model, data, augmentation, optimizer, loss or train values"))
            continue
        for label, value in probes(dist):
            problem = _refused(loaded, path, value)
            if problem is not None:
                if dist.kind == "uniform" and "whole number" in problem:
                    problem += "; draw whole numbers with int_uniform: [low, high]"
                issues.append(loaded.source.issue(where, f"{problem} (trying its {label}, {yaml_text(value)})"))
                break
    if issues:
        raise ConfigError(issues)
    if tune.sampler.name == "grid":
        drawn = [p for p, d in tune.space.items() if d.kind != "choice" and d.step is None
                 and d.kind not in ("int_uniform", "log_int_uniform")]
        if drawn:
            raise ConfigError([loaded.source.issue(("tune", "sampler"), (
                f"grid needs values it can list: {', '.join(drawn)} draw any number in a range; "
                "give them a choice: [...] or a step, or use another sampler"))])


def _refused(loaded: config_lib.LoadedConfig, path: str, value: Any) -> str | None:
    """Why the config with `--set path=value` (after the command's own) is refused, or None."""
    try:
        config_lib.load(loaded.file, [*loaded.overrides, f"{path}={yaml_text(value)}"])
    except ConfigError as e:
        return "; ".join(_issue_text(i, path) for i in e.issues)
    except CnnctlError as e:
        text = str(e)
        prefix = f"--set {f'{path}={yaml_text(value)}'!r}: "
        return text.removeprefix(prefix)
    return None


def _issue_text(issue: ConfigIssue, path: str) -> str:
    """An issue of a probed config, without its `--set` location where it is the probed path."""
    if issue.path == path or issue.file == "--set":
        return f"{issue.path}: {issue.message}" if issue.path and issue.path != path else issue.message
    return str(issue)


def grid(space: dict[str, schema_lib.SearchDistribution]) -> dict[str, list]:
    """The search space of Optuna's GridSampler: every value of each entry."""
    out = {}
    for path, dist in space.items():
        if dist.kind == "choice":
            out[path] = encoded_choices(dist)
        elif dist.kind in ("int_uniform", "log_int_uniform"):
            low, high = getattr(dist, dist.kind)
            out[path] = list(range(low, high + 1, int(dist.step or 1)))
        else:
            low, high = dist.uniform
            count = int(math.floor((high - low) / dist.step + 1e-9)) + 1
            out[path] = [low + i * dist.step for i in range(count)]
    return out

