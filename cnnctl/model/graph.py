"""Expand `model.layers` (blocks, expressions, repeats, optional layers, names, inputs) into a
flat, named layer graph."""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from cnnctl.config import load as config_lib
from cnnctl.config import schema as schema_lib
from cnnctl.config import wording
from cnnctl.config.layer_specs import LAYER_SPECS, BlockCall, LayerBase, MergeBase
from cnnctl.config.yaml_source import format_path
from cnnctl.errors import ConfigError, ConfigIssue
from cnnctl.model import expressions

INPUT = "input"
# the names every block's expressions see besides its parameters
BUILTIN_NAMES = ("in_channels", "in_height", "in_width", "copy", "copies", "block_index",
                 "block_count")
_WHOLE_PARAM = re.compile(r"^\$(\w+)$|^\$\{([^{}]+)\}$")
_INNER_EXPRESSION = re.compile(r"\$\{([^{}]+)\}")
_MAX_USES_SHOWN = 3
# the layer types that read several inputs
MERGES = frozenset(tag for tag, cls in LAYER_SPECS.items() if issubclass(cls, MergeBase))

ShapeOf = Callable[[str, list], "tuple | None"]
"""`shape_of(name, nodes)`: the output shape of the layer `name`, the `nodes` expanded so far
built as needed (`in_channels`); None where shapes are not known."""


@dataclasses.dataclass
class Node:
    """One Keras layer to build: its spec, final name, resolved inputs and YAML location."""

    spec: LayerBase
    name: str
    inputs: list[str]
    path: tuple
    used_at: tuple | None = None  # the (outermost) block use this layer came from, if any

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

    def __init__(self, prefix: str, inputs: list[str], input_names: list[str] = (INPUT,)):
        self.prefix = prefix
        self.aliases: dict[str, str] = {INPUT: inputs[0]}
        self.aliases.update(zip(input_names, inputs))
        self.previous = inputs[0]


class _Names(Mapping):
    """The names a block's expressions see: its parameters, then the built-in ones, the input
    sizes computed only when an expression asks (it may build the layers before the block)."""

    def __init__(self, values: dict[str, Any], lazy: dict[str, Callable[[], Any]]):
        self.values, self.lazy = values, lazy

    def __getitem__(self, key):
        if key in self.values:
            return self.values[key]
        if key in self.lazy:
            self.values[key] = self.lazy[key]()
            return self.values[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter([*self.values, *(k for k in self.lazy if k not in self.values)])

    def __len__(self) -> int:
        return len(set(self.values) | set(self.lazy))


# a chain of block uses, outermost first: ((path of the use, template name), ...)
Chain = tuple[tuple[tuple, str], ...]


class Expander:
    def __init__(self, loaded: config_lib.LoadedConfig, shape_of: ShapeOf | None = None,
                 block_counts: collections.Counter | None = None):
        self.loaded = loaded
        self.source = loaded.source
        self.blocks = loaded.config.model.blocks
        self.shape_of = shape_of
        self.block_counts = block_counts
        self.nodes: list[Node] = []
        self.issues: list[ConfigIssue] = []
        # issues inside templates: (issue, template) -> the chains of uses it was found in
        self.template_issues: dict[tuple[ConfigIssue, str], list[Chain]] = {}
        self.bad_template_layers: set[tuple] = set()
        # problems of templates found before any use (_check_templates), and every use's chain
        self.static_issues: list[tuple[ConfigIssue, str]] = []
        self.uses: dict[str, list[Chain]] = collections.defaultdict(list)
        self.taken: dict[str, tuple] = {INPUT: ("model", "input_shape")}
        self.auto_counts: collections.Counter[str] = collections.Counter()
        self.block_uses: collections.Counter[str] = collections.Counter()
        self.copies_made: collections.Counter[str] = collections.Counter()
        self.explicit_inputs = False

    def run(self) -> Graph:
        self._check_templates()
        scope = _Scope("", [INPUT])
        for i, spec in enumerate(self.loaded.config.model.layers):
            self._layer(spec, ("model", "layers", i), scope, chain=())
        graph = Graph(self.nodes, sequential=not self.explicit_inputs)
        if not self._issue_count():
            self._dead_layers(graph)
        if not self._issue_count() and not self.nodes and self.loaded.config.model.backbone is None:
            self.issues.append(self.source.issue(("model", "layers"), (
                "the model has no layers: every layer is left out (`when: false`, `repeat: 0`) "
                "or none is given; add one, e.g. - {type: dense, units: 10, activation: softmax}")))
        self._merge_template_issues()
        if self.issues:
            raise ConfigError(self.issues)
        return graph

    # --------------------------------------------------------------- one layer or block use
    def _layer(self, spec, path, scope: _Scope, chain: Chain) -> None:
        if isinstance(spec, BlockCall):
            self._block(spec, path, scope, chain)
            return
        inputs = self._resolve_inputs(spec.inputs, path, scope, chain)
        if inputs is None:
            if spec.name:  # later references to it are not errors of their own
                scope.aliases[spec.name] = scope.previous
            return
        if len(inputs) > 1 and spec.type not in MERGES:
            self._report(path + ("inputs",), f"{spec.type} reads one input but `inputs` names "
                         f"{len(inputs)}; merge them first (with {', '.join(sorted(MERGES))})",
                         chain)
            if spec.name:
                scope.aliases[spec.name] = scope.previous
            return
        if not spec.when or spec.repeat == 0:  # left out: its name stands for its input
            if spec.name:
                scope.aliases[spec.name] = inputs[0]
            scope.previous = inputs[0]
            return
        for r in range(spec.repeat):
            if spec.name is None:  # each copy takes the next automatic name: conv2d_1, conv2d_2
                name = self._auto_name(spec.type, scope)
            else:
                name = scope.prefix + spec.name + (f"_{r + 1}" if spec.repeat > 1 else "")
            if not self._claim(name, path, chain):
                return
            node_inputs = inputs if r == 0 else [scope.previous]
            self.nodes.append(Node(spec, name, node_inputs, path, chain[0][0] if chain else None))
            scope.previous = name
        if spec.name:
            scope.aliases[spec.name] = scope.previous

    def _block(self, call: BlockCall, path, scope: _Scope, chain: Chain) -> None:
        template = self.blocks.get(call.block)
        if template is None:
            known = list(self.blocks)
            self._report(path + ("block",), f"unknown block {call.block!r}"
                         f"{wording.did_you_mean(call.block, known)}; define it under model.blocks"
                         + (f" (defined: {', '.join(known)})" if known else ""), chain)
            return
        stack = [name for _, name in chain]
        if call.block in stack:
            self._report(path + ("block",), f"block {call.block!r} uses itself (through "
                         f"{' -> '.join(stack + [call.block])})", chain)
            return
        found = self._issue_count()
        args = dict(call.model_extra or {})
        for key in args:
            if key not in template.params:
                hint = wording.did_you_mean(key, template.params)
                self._report(path + (key,), f"block {call.block!r} has no parameter {key!r}{hint}; "
                             f"its parameters: {', '.join(template.params) or 'none'}", chain)
        params = {**template.params, **args}
        missing = [k for k, v in params.items() if v is None]
        if missing:
            self._report(path, f"block {call.block!r} needs parameter(s) {', '.join(missing)}", chain)
        inputs = None if self._issue_count() > found else self._block_inputs(call, template, path,
                                                                             scope, chain)
        if inputs is None:
            if call.name:  # later references to it are not errors of their own
                scope.aliases[call.name] = scope.previous
            return
        if not call.when or call.repeat == 0:
            if call.name:
                scope.aliases[call.name] = inputs[0]
            scope.previous = inputs[0]
            return
        template_path = ("model", "blocks", call.block, "layers")
        inner_chain = chain + ((path, call.block),)
        if inner_chain not in self.uses[call.block]:
            self.uses[call.block].append(inner_chain)
        for r in range(call.repeat):
            if call.name:
                instance = call.name if call.repeat == 1 else f"{call.name}_{r + 1}"
            else:  # numbered among the unnamed uses in the same scope: basic1, basic2, ...
                self.block_uses[scope.prefix + call.block] += 1
                instance = f"{call.block}{self.block_uses[scope.prefix + call.block]}"
            instance = scope.prefix + instance
            copy_inputs = inputs if r == 0 else [scope.previous, *inputs[1:]]
            inner = _Scope(instance + "_", copy_inputs, template.inputs)
            names = self._names(params, call, r, copy_inputs[0])
            for j, raw in enumerate(template.layers):
                lpath = template_path + (j,)
                if lpath in self.bad_template_layers:  # reported once, by _check_templates
                    self._stand_in(raw, inner)
                    continue
                data = self._substitute(raw, names, lpath, call.block, inner_chain)
                if data is _MISSING:
                    self._stand_in(raw, inner)
                    continue
                try:
                    spec = wording.validate(self.source, schema_lib.BlockLayer, data, prefix=lpath)
                except ConfigError as e:
                    for issue in e.issues:
                        self._report_issue(issue, inner_chain)
                    self._stand_in(raw, inner)
                    continue
                self._layer(spec, lpath, inner, inner_chain)
            scope.previous = inner.previous
            if call.name:
                scope.aliases[call.name] = inner.previous
            scope.aliases[instance.removeprefix(scope.prefix)] = inner.previous

    def _block_inputs(self, call, template, path, scope, chain) -> list[str] | None:
        wanted = template.inputs
        if not call.inputs:
            if len(wanted) == 1:
                return [scope.previous]
            self._report(path, f"block {call.block!r} takes {len(wanted)} inputs "
                         f"({', '.join(wanted)}): name them in `inputs: [...]`", chain)
            return None
        inputs = self._resolve_inputs(call.inputs, path, scope, chain)
        if inputs is not None and len(inputs) != len(wanted):
            self._report(path + ("inputs",), f"block {call.block!r} takes {len(wanted)} "
                         f"input{'s' if len(wanted) > 1 else ''} ({', '.join(wanted)}) but "
                         f"`inputs` names {len(inputs)}", chain)
            return None
        return inputs

    def _names(self, params: dict, call: BlockCall, copy: int, first_input: str) -> _Names:
        """What the expressions of one copy of a block see."""
        index = self.copies_made[call.block]
        self.copies_made[call.block] += 1
        nodes = self.nodes

        def size(axis: int) -> Callable[[], Any]:
            def value():  # of an image tensor (batch, height, width, channels); channels of any
                shape = self.shape_of(first_input, nodes) if self.shape_of else None
                if shape is None or (axis != -1 and len(shape) != 4):
                    return None
                return shape[axis]
            return value

        count = self.block_counts[call.block] if self.block_counts is not None else None
        return _Names({**params, "copy": copy, "copies": call.repeat, "block_index": index,
                       "block_count": count},
                      {"in_channels": size(-1), "in_height": size(1), "in_width": size(2)})

    def _stand_in(self, raw: dict, scope: _Scope) -> None:
        """A template layer that could not be made: later references to its name are not errors
        of their own."""
        name = raw.get("name")
        if isinstance(name, str) and "$" not in name:
            scope.aliases[name] = scope.previous

    # --------------------------------------------------------------- templates
    def _check_templates(self) -> None:
        """Check every template once, used or not: layer types, keys and literal values, and the
        names its expressions use. What depends on a use's parameters is checked at the use."""
        for block, template in self.blocks.items():
            known = set(template.params) | set(BUILTIN_NAMES)
            for j, raw in enumerate(template.layers):
                path = ("model", "blocks", block, "layers", j)
                bad = self._check_references(raw, path, known, block)
                if _has_reference(raw.get("type")) or _has_reference(raw.get("block")):
                    pass  # a type or block given by a parameter is checked at each use
                elif "block" in raw:
                    used = raw["block"]
                    if isinstance(used, str) and "$" not in used and used not in self.blocks:
                        bad = True
                        self.static_issues.append((self.source.issue(
                            path + ("block",), f"unknown block {used!r}"
                            f"{wording.did_you_mean(used, self.blocks)}; define it under "
                            "model.blocks"), block))
                else:
                    bad |= self._check_literal_layer(raw, path, block)
                if bad:
                    self.bad_template_layers.add(path)

    def _check_references(self, value, path, known, block) -> bool:
        if isinstance(value, dict):
            return any([self._check_references(v, path + (k,), known, block)
                        for k, v in value.items()])
        if isinstance(value, list):
            return any([self._check_references(v, path + (i,), known, block)
                        for i, v in enumerate(value)])
        if not isinstance(value, str) or "$" not in value:
            return False
        whole = _WHOLE_PARAM.match(value)
        if whole and whole.group(1):
            texts, plain = [], [whole.group(1)]
        else:
            texts, plain = ([whole.group(2)] if whole else _INNER_EXPRESSION.findall(value)), []
        for name in plain:
            if name not in known:
                self.static_issues.append(
                    (self.source.issue(path, self._unknown_parameter(name, block)), block))
                return True
        for text in texts:
            try:
                unknown = [n for n in expressions.names_in(text) if n not in known]
            except expressions.ExpressionError as e:
                self.static_issues.append((self.source.issue(path, str(e)), block))
                return True
            if unknown:
                self.static_issues.append((self.source.issue(path, (
                    f"${{{text}}}: {self._unknown_parameter(unknown[0], block)}")), block))
                return True
        return False

    def _unknown_parameter(self, name: str, block: str) -> str:
        params = self.blocks[block].params
        return (f"unknown parameter ${name}{wording.did_you_mean(name, [*params, *BUILTIN_NAMES])}; "
                f"block {block!r} has parameters: {', '.join(params) or 'none'}")

    def _check_literal_layer(self, raw: dict, path: tuple, block: str) -> bool:
        """Validate a template layer with its `$` values left out; True if it is wrong."""
        removed = {k for k, v in raw.items() if _has_reference(v)}
        literal = {k: v for k, v in raw.items() if k not in removed}
        try:
            wording.validate(self.source, schema_lib.BlockLayer, literal, prefix=path)
        except ConfigError as e:
            skip = {format_path(path + (k,)) for k in removed}
            if removed:  # the model's own checks may need a left-out value
                skip.add(format_path(path))
            issues = [i for i in e.issues if i.path not in skip]
            self.static_issues.extend((i, block) for i in issues)
            return bool(issues)
        return False

    # --------------------------------------------------------------- errors
    def _issue_count(self) -> int:
        return len(self.issues) + len(self.template_issues) + len(self.static_issues)

    def _report(self, path: tuple, message: str, chain: Chain) -> None:
        self._report_issue(self.source.issue(path, message), chain)

    def _report_issue(self, issue: ConfigIssue, chain: Chain) -> None:
        if not chain:
            self.issues.append(issue)
            return
        uses = self.template_issues.setdefault((issue, chain[-1][1]), [])
        if chain not in uses:
            uses.append(chain)

    def _merge_template_issues(self) -> None:
        """One line per problem in a template, naming each chain of uses it was found in (all
        the template's uses for a problem found before any use)."""
        found = [(issue, block, chains) for (issue, block), chains in self.template_issues.items()]
        found += [(issue, block, self.uses[block]) for issue, block in self.static_issues]
        for issue, block, chains in found:
            if not chains:
                self.issues.append(dataclasses.replace(
                    issue, message=f"{issue.message} [block {block!r}, not used]"))
                continue
            shown = [" via ".join(format_path(p) for p, _ in c) for c in chains[:_MAX_USES_SHOWN]]
            more = len(chains) - len(shown)
            uses = ", ".join(shown) + (f" and {more} more" if more else "")
            self.issues.append(dataclasses.replace(
                issue, message=f"{issue.message} [block {block!r} used at {uses}]"))

    def _dead_layers(self, graph: Graph) -> None:
        needed = {graph.output}
        for node in reversed(graph.nodes):
            if node.name in needed:
                needed.update(node.inputs)
        dead: dict[tuple, list[Node]] = {}
        for node in graph.nodes:
            if node.name not in needed:
                dead.setdefault(node.path, []).append(node)
        for path, nodes in dead.items():
            names = ", ".join(repr(n.name) for n in nodes[:_MAX_USES_SHOWN]) + (
                f" and {len(nodes) - _MAX_USES_SHOWN} more" if len(nodes) > _MAX_USES_SHOWN else "")
            message = (f"{nodes[0].spec.type} {names} does not lead to the model's output "
                       f"({graph.output!r}, the last layer): no later layer reads it; remove it, "
                       "or name it in a later layer's `inputs`")
            if nodes[0].used_at:
                message += f" [block used at {format_path(nodes[0].used_at)}]"
            self.issues.append(self.source.issue(path, message))

    # --------------------------------------------------------------- helpers
    def _substitute(self, value: Any, names: _Names, path: tuple, block: str, chain: Chain) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                out[k] = self._substitute(v, names, path + (k,), block, chain)
                if out[k] is _MISSING:
                    return _MISSING
            return out
        if isinstance(value, list):
            out = [self._substitute(v, names, path + (i,), block, chain) for i, v in enumerate(value)]
            return _MISSING if any(v is _MISSING for v in out) else out
        if not isinstance(value, str) or "$" not in value:
            return value
        try:
            whole = _WHOLE_PARAM.match(value)
            if whole and whole.group(1):
                return names[whole.group(1)]
            if whole:
                return expressions.evaluate(whole.group(2), names)
            return _INNER_EXPRESSION.sub(lambda m: _text(expressions.evaluate(m.group(1), names)),
                                         value)
        except (KeyError, expressions.ExpressionError) as e:
            message = (self._unknown_parameter(e.args[0], block) if isinstance(e, KeyError)
                       else str(e))
            self._report(path, message, chain)
            return _MISSING

    def _resolve_inputs(self, names, path, scope: _Scope, chain: Chain) -> list[str] | None:
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
                self._report(path + ("inputs", k), f"no earlier layer is named {name!r}"
                             f"{wording.did_you_mean(name, visible)}; `inputs` may name earlier "
                             f"layers of the same {'block' if scope.prefix else 'model'} or "
                             f"{'its inputs' if scope.prefix else '`input`'}", chain)
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

    def _claim(self, name: str, path: tuple, chain: Chain) -> bool:
        if name in self.taken:
            first = self.source.line(self.taken[name])
            self._report(path + ("name",), f"duplicate layer name {name!r}"
                         + (f" (first used on line {first})" if first else "")
                         + "; names must be unique", chain)
            return False
        self.taken[name] = path
        return True


_MISSING = object()


def _has_reference(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_reference(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_reference(v) for v in value)
    return isinstance(value, str) and "$" in value


def _text(value: Any) -> str:
    """An expression's value inside a name: whole floats without their `.0`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def expand(loaded: config_lib.LoadedConfig, shape_of: ShapeOf | None = None) -> Graph:
    """Flatten blocks and repeats into named nodes with resolved inputs.

    Args:
        loaded: the validated config.
        shape_of: gives block expressions their input's size (`in_channels`); without it,
            those expressions are errors.

    Raises:
        ConfigError: unknown blocks, parameters or names, bad expressions or references,
            duplicate names, layers that do not lead to the output.
    """
    # a first pass counts the copies of each template, for `block_count`
    counting = Expander(loaded)
    try:
        counting.run()
    except ConfigError:
        pass
    return Expander(loaded, shape_of, block_counts=counting.copies_made).run()
