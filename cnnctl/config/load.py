"""How a YAML file becomes a validated Config: reading it with line numbers, `--set` overrides,
validation, and the located errors of everything that runs on a config afterwards."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

from cnnctl import user_files
from cnnctl.config import yaml_source
from cnnctl.config.schema import Config
from cnnctl.config.wording import validate
from cnnctl.errors import CnnctlError, ConfigError, ConfigIssue, ConfigValueError

MAX_CONFIG_BYTES = 1 * user_files.MiB  # far above any real config; a bound on what is read


class LoadedConfig:
    """A validated config with the YAML source it came from (for error locations)."""

    def __init__(self, config: Config, source: yaml_source.Source, text: str | None = None,
                 overrides: list[str] | None = None):
        self.config = config
        self.source = source
        self.text = text  # the file as the user wrote it
        self.overrides = list(overrides or [])  # the `--set` items applied to it

    @property
    def file(self) -> str:
        return self.source.file

    def error_at(self, key: str, message: str) -> ConfigError:
        """A ConfigError for the dotted config path `key` (`data.train_dir`), located at its
        line in the file, or at `--set` when an override gave the value. List items are
        written `[i]` (`augmentation.layers[2].factor`)."""
        path = tuple(int(part) if part.isdigit() else part
                     for part in re.findall(r"[^.\[\]]+", key))
        if any(path[:len(o)] == o for o in self.source.overridden):
            return ConfigError([ConfigIssue("--set", None, key, message)])
        return ConfigError([self.source.issue(path, message)])

    @contextlib.contextmanager
    def located(self):
        """Inside this block a `ConfigValueError`, whoever raises it (a data source, a layer, the
        distribution plan), leaves as a ConfigError at FILE:LINE: path of its key. Code below
        the config raises ConfigValueError(key, detail); the entry points that hold the loaded
        config (train, check, data check, eval, a run's test images) run inside this."""
        try:
            yield
        except ConfigValueError as e:
            raise self.error_at(e.key, e.detail) from None


def located(config):
    """`config.located()` for a LoadedConfig; for a bare Config (no file to point at), a block
    that lets ConfigValueError through as it is (`key: detail`)."""
    return config.located() if isinstance(config, LoadedConfig) else contextlib.nullcontext()


def load(path: str | Path, overrides: list[str] | None = None) -> LoadedConfig:
    """Read, parse and validate a config file, with `--set key=value` overrides applied.

    Raises:
        CnnctlError: the file cannot be read, is not a regular file, or is over MAX_CONFIG_BYTES.
        ConfigError: every problem found in the file, each with its line and config path.
    """
    path = Path(path)
    try:
        text = user_files.read_bytes(path, MAX_CONFIG_BYTES, "a config file").decode("utf-8")
        text = text.replace("\r\n", "\n").replace("\r", "\n")  # as read_text's newline mode
    except FileNotFoundError:
        raise CnnctlError(f"{path}: config file not found; check the path") from None
    except user_files.UnfitFile as e:
        hint = "give the YAML config" if e.size is not None else "give a YAML config file"
        raise CnnctlError(f"{path}: {e.reason}; {hint}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CnnctlError(f"{path}: cannot read the config file: {e}") from None
    source = yaml_source.parse(text, str(path))
    if not isinstance(source.data, dict):
        raise ConfigError([source.issue((), "the top level must be a mapping with sections "
                                             "`model:`, `data:`, `train:`, ...")])
    for item in overrides or []:
        _apply_override(source, item)
    return LoadedConfig(validate(source, Config), source, text, overrides)


def _apply_override(source: yaml_source.Source, item: str) -> None:
    """Apply one `path.to.key=value` override; the value is read as YAML.

    Raises:
        CnnctlError: the override is malformed, its value has a YAML tag, or its path goes
            through a value that is not a mapping or a list.
    """
    key, sep, raw = item.partition("=")
    parts: list[Any] = []
    for part in key.strip().split(".") if sep else [""]:
        match = _OVERRIDE_PART.fullmatch(part)
        if not match:
            raise CnnctlError(f"--set {item!r}: expected path.to.key=value, e.g. --set "
                              "train.epochs=1 or --set model.layers[0].filters=16")
        parts.append(match[1])
        parts.extend(int(index) for index in re.findall(r"\d+", match[2]))
    value = _override_value(item, raw, yaml_source.format_path(parts))
    node = source.data
    for depth, part in enumerate(parts):
        here, where = tuple(parts[:depth + 1]), yaml_source.format_path(parts[:depth]) or "the top level"
        if isinstance(part, int) and not (isinstance(node, list) and part < len(node)):
            raise CnnctlError(f"--set {item!r}: {yaml_source.format_path(here)} is not in the config"
                              + (f" ({where} has {len(node)} item(s))" if isinstance(node, list) else ""))
        if isinstance(part, str) and not isinstance(node, dict):
            raise CnnctlError(f"--set {item!r}: {where} is not a mapping")
        if depth == len(parts) - 1:
            node[part] = value
            break
        if isinstance(part, str) and node.get(part) is None:
            if isinstance(parts[depth + 1], int):
                raise CnnctlError(f"--set {item!r}: {yaml_source.format_path(parts[:depth + 2])} "
                                  "is not in the config")
            node[part] = {}  # a section that is absent or empty in the file comes from --set alone
            source.overridden.add(here)
        node = node[part]
    source.lines[tuple(parts)] = None  # errors in an override point at the override, not a line
    source.overridden.add(tuple(parts))


_OVERRIDE_PART = re.compile(r"([^.\[\]=\s]+)((?:\[\d+\])*)")


def _override_value(item: str, raw: str, key: str = "") -> Any:
    """The value of `--set key=RAW`: RAW read as YAML, or the text itself where it is not YAML."""
    if not raw.strip():
        return None
    try:
        return yaml_source.parse(raw, "--set").data
    except ConfigError as e:
        if any(i.message == yaml_source.DEPTH_MESSAGE for i in e.issues):  # the item is too long to repeat
            raise ConfigError([ConfigIssue("--set", None, key, yaml_source.DEPTH_MESSAGE)]) from None
        if all(i.message.startswith(("YAML syntax error", "the file is empty")) for i in e.issues):
            return raw
        raise CnnctlError(f"--set {item!r}: {'; '.join(i.message for i in e.issues)}") from None




def differences(old: dict, new: dict) -> list[str]:
    """`path: old -> new` for every value that differs between two config dumps
    (`Config.model_dump(mode="json")`)."""
    def flat(value, prefix=""):
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
            return out
        if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
            out = {}
            for i, v in enumerate(value):
                out.update(flat(v, f"{prefix}[{i}]"))
            return out
        return {prefix: value}

    a, b = flat(old), flat(new)
    return [f"{k}: {a.get(k, 'absent')} -> {b.get(k, 'absent')}"
            for k in sorted(set(a) | set(b)) if a.get(k, "absent") != b.get(k, "absent")]
