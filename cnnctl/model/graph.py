"""Expand `model.layers` (blocks, repeats, names, inputs) into a flat, named layer graph."""

from __future__ import annotations

import collections
import copy
import dataclasses
import re
from typing import Any

from cnnctl.config import load as config_lib
from cnnctl.config import schema as schema_lib
from cnnctl.config import wording
from cnnctl.errors import ConfigError, ConfigIssue
from cnnctl.config.layer_specs import BlockCall, LayerBase
from cnnctl.config.yaml_source import format_path

INPUT = "input"
_WHOLE_PARAM = re.compile(r"^\$(\w+)$|^\$\{(\w+)\}$")
_INNER_PARAM = re.compile(r"\$\{(\w+)\}")


@dataclasses.dataclass
class Node:
    """One Keras layer to build: its spec, final name, resolved inputs and YAML location."""

    spec: LayerBase
    name: str
    inputs: list[str]
    path: tuple
    used_at: tuple | None = None  # the block call this layer came from, if any

    def where(self) -> str:
        text = format_path(self.path)
        return text + (f" (in the block used at {format_path(self.used_at)})" if self.used_at else "")


@dataclasses.dataclass
class Graph:
    nodes: list[Node]
    sequential: bool  # no layer named its inputs: a plain stack

    @property
    def output(self) -> str:
        return self.nodes[-1].name if self.nodes else INPUT


class _Scope:
    """Names visible while expanding one list of layers (the model's or one block instance's)."""

    def __init__(self, prefix: str, input_name: str, parent_aliases: dict[str, str] | None = None):
        self.prefix = prefix
        self.aliases: dict[str, str] = {INPUT: input_name}
        self.previous = input_name
        self.parent_aliases = parent_aliases


class Expander:
    def __init__(self, loaded: config_lib.LoadedConfig):
        self.loaded = loaded
        self.source = loaded.source
        self.blocks = loaded.config.model.blocks
        self.nodes: list[Node] = []
        self.issues: list[ConfigIssue] = []
        self.taken: dict[str, tuple] = {INPUT: ("model", "input_shape")}
        self.auto_counts: collections.Counter[str] = collections.Counter()
        self.block_uses: collections.Counter[str] = collections.Counter()
        self.explicit_inputs = False

    def run(self) -> Graph:
        scope = _Scope("", INPUT)
        for i, spec in enumerate(self.loaded.config.model.layers):
            self._layer(spec, ("model", "layers", i), scope, used_at=None, stack=())
        if self.issues:
            raise ConfigError(self.issues)
        return Graph(self.nodes, sequential=not self.explicit_inputs)

    # --------------------------------------------------------------- one layer or block use
    def _layer(self, spec, path, scope: _Scope, used_at, stack) -> None:
        if isinstance(spec, BlockCall):
            self._block(spec, path, scope, used_at, stack)
            return
        inputs = self._resolve_inputs(spec.inputs, path, scope)
        if inputs is None:
            return
        for r in range(spec.repeat):
            if spec.name is None:  # each copy takes the next automatic name: conv2d_1, conv2d_2
                name = self._auto_name(spec.type, scope)
            else:
                name = scope.prefix + spec.name + (f"_{r + 1}" if spec.repeat > 1 else "")
            if not self._claim(name, path):
                return
            node_inputs = inputs if r == 0 else [scope.previous]
            self.nodes.append(Node(spec, name, node_inputs, path, used_at))
            scope.previous = name
        if spec.name:
            scope.aliases[spec.name] = scope.previous

    def _block(self, call: BlockCall, path, scope: _Scope, used_at, stack) -> None:
        template = self.blocks.get(call.block)
        if template is None:
            known = list(self.blocks)
            self.issues.append(self.source.issue(
                path + ("block",), f"unknown block {call.block!r}"
                f"{wording.did_you_mean(call.block, known)}; define it under model.blocks"
                + (f" (defined: {', '.join(known)})" if known else "")))
            return
        if call.block in stack:
            self.issues.append(self.source.issue(
                path + ("block",), f"block {call.block!r} uses itself (through {' -> '.join(stack)})"))
            return
        found = len(self.issues)
        args = dict(call.model_extra or {})
        for key in args:
            if key not in template.params:
                hint = wording.did_you_mean(key, template.params)
                self.issues.append(self.source.issue(
                    path + (key,), f"block {call.block!r} has no parameter {key!r}{hint}; "
                    f"its parameters: {', '.join(template.params) or 'none'}"))
        params = {**template.params, **args}
        missing = [k for k, v in params.items() if v is None]
        if missing:
            self.issues.append(self.source.issue(
                path, f"block {call.block!r} needs parameter(s) {', '.join(missing)}"))
        if len(self.issues) > found:
            if call.name:  # later references to it are not errors of their own
                scope.aliases[call.name] = scope.previous
            return
        inputs = self._resolve_inputs(call.inputs, path, scope)
        if inputs is None:
            return
        if len(inputs) != 1:
            self.issues.append(self.source.issue(path + ("inputs",), "a block takes one input"))
            return
        template_path = ("model", "blocks", call.block, "layers")
        for r in range(call.repeat):
            if call.name:
                instance = call.name if call.repeat == 1 else f"{call.name}_{r + 1}"
            else:  # numbered among the unnamed uses in the same scope: basic1, basic2, ...
                self.block_uses[scope.prefix + call.block] += 1
                instance = f"{call.block}{self.block_uses[scope.prefix + call.block]}"
            instance = scope.prefix + instance
            inner = _Scope(instance + "_", inputs[0] if r == 0 else scope.previous)
            for j, raw in enumerate(template.layers):
                lpath = template_path + (j,)
                data = self._substitute(copy.deepcopy(raw), params, lpath, call.block)
                if data is None:
                    continue
                try:
                    spec = wording.validate(self.source, schema_lib.BoundedLayer, data, prefix=lpath)
                except ConfigError as e:
                    self.issues.extend(dataclasses.replace(
                        i, message=f"{i.message} [block {call.block!r} used at {format_path(path)}]")
                        for i in e.issues)
                    return
                self._layer(spec, lpath, inner, used_at or path, stack + (call.block,))
            scope.previous = inner.previous
            if call.name:
                scope.aliases[call.name] = inner.previous
            scope.aliases[instance.removeprefix(scope.prefix)] = inner.previous

    # --------------------------------------------------------------- helpers
    def _substitute(self, value: Any, params: dict, path: tuple, block: str) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                sub = self._substitute(v, params, path + (k,), block)
                if sub is _MISSING:
                    return None
                out[k] = sub
            return out
        if isinstance(value, list):
            out = [self._substitute(v, params, path + (i,), block) for i, v in enumerate(value)]
            return None if _MISSING in out else out
        if isinstance(value, str):
            whole = _WHOLE_PARAM.match(value)
            names = [whole.group(1) or whole.group(2)] if whole else _INNER_PARAM.findall(value)
            for name in names:
                if name not in params:
                    self.issues.append(self.source.issue(
                        path, f"unknown parameter ${name}{wording.did_you_mean(name, params)}; "
                        f"block {block!r} has parameters: {', '.join(params) or 'none'}"))
                    return _MISSING
            if whole:
                return params[names[0]]
            return _INNER_PARAM.sub(lambda m: str(params[m.group(1)]), value)
        return value

    def _resolve_inputs(self, names, path, scope: _Scope) -> list[str] | None:
        if not names:
            return [scope.previous]
        self.explicit_inputs = True
        out = []
        for k, name in enumerate(names):
            if name in scope.aliases:
                out.append(scope.aliases[name])
            elif scope.prefix + name in self.taken:
                out.append(scope.prefix + name)
            elif not scope.prefix and name in self.taken:
                out.append(name)
            else:
                visible = [n for n in scope.aliases if n != INPUT] + [INPUT]
                self.issues.append(self.source.issue(
                    path + ("inputs", k), f"no earlier layer is named {name!r}"
                    f"{wording.did_you_mean(name, visible)}; `inputs` may name earlier layers "
                    f"of the same {'block' if scope.prefix else 'model'} or `input`"))
                return None
        return out

    def _auto_name(self, type_: str, scope: _Scope) -> str:
        key = scope.prefix + type_
        while True:
            n = self.auto_counts[key]
            self.auto_counts[key] += 1
            name = key if n == 0 else f"{key}_{n}"
            if name not in self.taken:
                return name

    def _claim(self, name: str, path: tuple) -> bool:
        if name in self.taken:
            first = self.source.line(self.taken[name])
            self.issues.append(self.source.issue(
                path + ("name",), f"duplicate layer name {name!r}"
                + (f" (first used on line {first})" if first else "") + "; names must be unique"))
            return False
        self.taken[name] = path
        return True


_MISSING = object()


def expand(loaded: config_lib.LoadedConfig) -> Graph:
    """Flatten blocks and repeats into named nodes with resolved inputs.

    Raises:
        ConfigError: unknown blocks or parameters, bad references, duplicate names.
    """
    return Expander(loaded).run()
