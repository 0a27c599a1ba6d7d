"""Safe YAML reading that remembers the line of every value and refuses duplicate keys."""

from __future__ import annotations

import re
from typing import Any

import yaml

from cnnctl.errors import ConfigError, ConfigIssue

Path = tuple  # of str (mapping keys) and int (list indices)

_PLAIN_TAGS = {
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
}
_MERGE_TAG = "tag:yaml.org,2002:merge"

# Aliases are copied at each use, so `&a [*a]` would recurse forever and nested aliases can
# grow exponentially ("billion laughs"); a config never needs anywhere near this many values.
MAX_VALUES = 100_000
# Lists and mappings inside each other: PyYAML composes (and this module builds) them
# recursively, so a few hundred levels would end in RecursionError. A config is about 6 deep.
MAX_DEPTH = 100
DEPTH_MESSAGE = (f"lists and mappings are nested more than {MAX_DEPTH} levels deep here; "
                 "a config needs only a few")


class _TooDeep(yaml.YAMLError):
    """Raised while composing at the node that is nested more than MAX_DEPTH levels deep."""

    def __init__(self, mark):
        super().__init__(DEPTH_MESSAGE)
        self.line = mark.line + 1 if mark is not None else None


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float (YAML 1.1 wants `1.0e-3`), as people write
    learning rates."""

    _depth = 0

    def compose_node(self, parent, index):
        # the one recursive step of PyYAML's composer: count the depth there
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


# `(3, 3)` (numbers in parentheses) as a whole value: YAML reads it as the text "(3, 3)"
_NUMBER = r"[-+]?\.?\d[-+.\w]*"
TUPLE_TEXT = re.compile(rf"\(\s*{_NUMBER}(?:\s*,\s*{_NUMBER})*\s*,?\s*\)")


def tuple_message(items: list[str]) -> str:
    """What to say about a `(3, 3)` in a config (given its items): YAML has no tuples."""
    items = [item.strip() for item in items if item.strip()]
    return f"({', '.join(items)}) is not a YAML list; write [{', '.join(items)}]"


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

    def __init__(self, data: Any, lines: dict[Path, int | None], file: str):
        self.data = data
        self.lines = lines
        self.file = file
        self.overridden: set[Path] = set()  # paths replaced by `--set`: errors there name --set

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
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except _TooDeep as e:
        raise ConfigError([ConfigIssue(file, e.line, "", DEPTH_MESSAGE)]) from None
    except yaml.MarkedYAMLError as e:
        line, message = _syntax_error(e)
        raise ConfigError([ConfigIssue(file, line, "", f"YAML syntax error: {message}")]) from None
    except yaml.YAMLError as e:
        raise ConfigError([ConfigIssue(file, None, "", f"YAML syntax error: {e}")]) from None
    if node is None or node.tag == "tag:yaml.org,2002:null" and node.value == "":  # or just `---`
        raise ConfigError([ConfigIssue(file, 1, "", "the file is empty; a config needs at least a `model:` section")])
    builder = _Builder(loader, file)
    builder.lines[()] = node.start_mark.line + 1
    try:
        data = builder.build(node, ())
    finally:
        loader.dispose()
    if builder.issues:
        raise ConfigError(builder.issues)
    return Source(data, builder.lines, file)


def _syntax_error(e: yaml.MarkedYAMLError) -> tuple[int | None, str]:
    """The line and plain-words description of a YAML syntax error."""
    problem = e.problem or "invalid YAML"
    problem_line = e.problem_mark.line + 1 if e.problem_mark else None
    context_line = e.context_mark.line + 1 if e.context_mark else None
    context = e.context or ""
    if "quoted scalar" in context and "end of stream" in problem:  # found at the end of the file
        return context_line, "a quoted string starts on this line and is never closed"
    if "escape character" in problem:
        return problem_line, (f"{problem} in a double-quoted string; use single quotes, or write "
                              "a backslash as \\\\")
    for kind, bracket in (("flow sequence", "["), ("flow mapping", "{")):
        if kind in context:
            return context_line, (f"the `{bracket}` opened on this line is not closed "
                                  f"({problem} on line {problem_line})")
    if "'\\t'" in problem:
        return problem_line, "a tab character; indent YAML with spaces only"
    if context.startswith("while parsing a block") and "expected <block end>" in problem:
        inside = {"mapping": "mapping", "collection": "list"}.get(context.split()[-1], context.split()[-1])
        return problem_line, (f"this line's indentation does not fit the {inside} "
                              f"that starts on line {context_line}; indent keys of one mapping "
                              "(and items of one list) equally")
    if problem == "mapping values are not allowed here":
        return problem_line, "unexpected `: ` inside a value; put quotes around a value that contains ': '"
    if problem.startswith("found undefined alias"):
        alias = problem.split()[-1].strip("'")
        return problem_line, f"alias *{alias} is used before any `&{alias}` anchor defines it"
    if context and context_line != problem_line:
        return problem_line, f"{context} (on line {context_line}), {problem}"
    return problem_line, f"{context}, {problem}" if context else problem


class _Builder:
    """Turns a YAML node tree into plain data, noting each path's line and every problem."""

    def __init__(self, loader: yaml.SafeLoader, file: str):
        self.loader = loader
        self.file = file
        self.lines: dict[Path, int | None] = {}
        self.issues: list[ConfigIssue] = []
        self.count = 0
        self.active: set[int] = set()  # ids of the nodes being built: an alias back into one is a cycle

    def problem(self, node: yaml.Node, path: Path, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, node.start_mark.line + 1, format_path(path), message))

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise ConfigError([ConfigIssue(self.file, node.start_mark.line + 1, format_path(path), (
                f"the file expands to more than {MAX_VALUES:,} values; aliases (*name) are "
                "nested too deep"))])
        if not self._plain(node, path):
            return None
        if id(node) in self.active:
            self.problem(node, path, "this alias refers to a list or mapping that contains it")
            return None
        self.active.add(id(node))
        try:
            if len(path) > MAX_DEPTH and isinstance(node, yaml.CollectionNode):
                # aliases can nest what the composer saw shallow
                raise ConfigError([ConfigIssue(self.file, node.start_mark.line + 1, "", DEPTH_MESSAGE)])
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                out = []
                for i, item in enumerate(node.value):
                    self.lines[path + (i,)] = item.start_mark.line + 1
                    out.append(self.build(item, path + (i,)))
                return out
            return self.loader.construct_object(node)
        finally:
            self.active.discard(id(node))

    def _plain(self, node: yaml.Node, path: Path) -> bool:
        if node.tag in _PLAIN_TAGS:
            return True
        self.problem(node, path, (
            f"YAML tag {node.tag.replace('tag:yaml.org,2002:', '!!')!r} is not allowed: "
            "configs are plain YAML (no python objects or custom tags); remove the tag"))
        return False

    def _split_tuples(self, node: yaml.MappingNode, path: Path) -> None:
        """Report and drop a `(3, 3)` that a flow mapping split at its comma.

        `{kernel_size: (3, 3), ...}` reads as `kernel_size: "(3"` and a key `3)` without a value.
        """
        pairs, kept = node.value, []
        i = 0
        while i < len(pairs):
            key_node, value_node = pairs[i]
            kept.append(pairs[i])
            i += 1
            if not (isinstance(key_node, yaml.ScalarNode) and _plain_text(value_node)
                    and value_node.value.startswith("(")
                    and ")" not in value_node.value):
                continue
            items, end = [value_node.value[1:]], i
            while end < len(pairs) and _unquoted(pairs[end][0]) and _empty(pairs[end][1]):
                items.append(pairs[end][0].value)
                end += 1
                if items[-1].endswith(")"):
                    break
            if not items[-1].endswith(")") or len(items) < 2:
                continue
            items[-1] = items[-1][:-1]
            self.problem(key_node, path + (key_node.value,), tuple_message(items))
            i = end
        node.value = kept

    def _key(self, key_node: yaml.Node, path: Path) -> str | None:
        """A mapping key as the text the user wrote (`1:` and `on:` are names, not 1 and True)."""
        if not self._plain(key_node, path):
            return None
        if not isinstance(key_node, yaml.ScalarNode):
            self.problem(key_node, path, "a key must be a name, not a list or a mapping")
            return None
        return key_node.value

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict:
        self._split_tuples(node, path)
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                if not all(isinstance(m, yaml.MappingNode) and m is not node
                           and id(m) not in self.active and self._plain(m, path) for m in merged):
                    self.problem(key_node, path, "`<<:` merges an alias of a mapping, "
                                                 "e.g. `<<: *defaults`, or a list of them")
                    return {}
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            if key in seen:
                self.problem(key_node, path + (key,),
                             f"duplicate key {key!r} (first given on line {seen[key]}); keep only one")
            seen[key] = line
        try:
            self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merges; explicit keys come last and win
        except (yaml.MarkedYAMLError, RecursionError):  # a merge inside the merged mapping is wrong
            self.problem(node, path, "`<<:` merges an alias of a mapping, e.g. `<<: *defaults`, "
                                     "or a list of them")
            return {}
        out = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _PLAIN_TAGS:
                continue  # reported above
            key = key_node.value
            child = path + (key,)
            self.lines[child] = key_node.start_mark.line + 1  # the last one is the value kept
            out[key] = self.build(value_node, child)
        return out


def _unquoted(node: yaml.Node) -> bool:
    """A scalar written without quotes (text, a number, ...)."""
    return isinstance(node, yaml.ScalarNode) and node.style is None


def _plain_text(node: yaml.Node) -> bool:
    """A scalar written without quotes that YAML reads as a string."""
    return _unquoted(node) and node.tag == "tag:yaml.org,2002:str"


def _empty(node: yaml.Node) -> bool:
    """The missing value of a key given alone (`{a, b: 1}`)."""
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null" and node.value == ""
