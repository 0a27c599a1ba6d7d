"""Safe YAML reading that remembers the line of every value and refuses duplicate keys."""

from __future__ import annotations

from typing import Any

import yaml

from cnnctl.errors import ConfigError, ConfigIssue

Path = tuple  # of str (mapping keys) and int (list indices)

_PLAIN_TAGS = {
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
}


def format_path(path: Path) -> str:
    """`("model", "layers", 3, "filters")` -> `model.layers[3].filters`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class Source:
    """A parsed YAML document: its data and the line of each config path."""

    def __init__(self, data: Any, lines: dict[Path, int], file: str):
        self.data = data
        self.lines = lines
        self.file = file

    def line(self, path: Path) -> int | None:
        """The line of `path`, or of its nearest ancestor that is in the file."""
        path = tuple(path)
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path)

    def issue(self, path: Path, message: str) -> ConfigIssue:
        return ConfigIssue(self.file, self.line(path), format_path(path), message)


def parse(text: str, file: str) -> Source:
    """Parse YAML text into plain Python data, refusing tags, duplicate keys and syntax errors.

    Raises:
        ConfigError: with every problem found, each with its line.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = e.problem or "invalid YAML"
        if e.context:
            what = f"{e.context}, {what}"
        raise ConfigError([ConfigIssue(file, mark.line + 1 if mark else None, "",
                                       f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as e:
        raise ConfigError([ConfigIssue(file, None, "", f"YAML syntax error: {e}")]) from None
    if node is None:
        raise ConfigError([ConfigIssue(file, 1, "", "the file is empty; a config needs at least a `model:` section")])
    issues: list[ConfigIssue] = []
    lines: dict[Path, int] = {(): node.start_mark.line + 1}
    try:
        data = _construct(loader, node, (), lines, issues, file)
    finally:
        loader.dispose()
    if issues:
        raise ConfigError(issues)
    return Source(data, lines, file)


def _construct(loader, node, path, lines, issues, file):
    if node.tag not in _PLAIN_TAGS:
        issues.append(ConfigIssue(
            file, node.start_mark.line + 1, format_path(path),
            f"YAML tag {node.tag.replace('tag:yaml.org,2002:', '!!')!r} is not allowed: "
            "configs are plain YAML (no python objects or custom tags); remove the tag"))
        return None
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                issues.append(ConfigIssue(
                    file, line, format_path(path + (key,)),
                    f"duplicate key {key!r} (first given on line {seen[key]}); keep only one"))
            seen[key] = line
        loader.flatten_mapping(node)  # resolves `<<: *anchor` merges; explicit keys come last and win
        out = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            child = path + (key,)
            lines.setdefault(child, key_node.start_mark.line + 1)
            out[key] = _construct(loader, value_node, child, lines, issues, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        out = []
        for i, item in enumerate(node.value):
            child = path + (i,)
            lines[child] = item.start_mark.line + 1
            out.append(_construct(loader, item, child, lines, issues, file))
        return out
    return loader.construct_object(node)
