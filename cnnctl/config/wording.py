"""Config errors in words: pydantic's errors turned into one located line each
(`FILE:LINE: path: message`), with "did you mean" suggestions for misspelt names."""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from typing import Annotated, Any, Union

import pydantic

from cnnctl.config import yaml_source
from cnnctl.config.layer_specs import KERAS_LAYER_NAMES, LAYER_NAME_PATTERN, LAYER_SPECS, NAME_PATTERN
from cnnctl.config.schema import AUGMENT_KEYS, AUGMENT_SPECS, AugmentBase
from cnnctl.errors import ConfigError, ConfigIssue


def did_you_mean(word: Any, choices, aliases: dict[str, str] | None = None) -> str:
    """` (did you mean 'x'?)` for the closest choice, or "" when nothing is close.

    Case, `_` and `-` do not count, so the Keras spellings of a name find it (`Relu` and
    `ReLU` relu, `SGD` sgd, `CategoricalCrossentropy` categorical_crossentropy, `HeNormal`
    he_normal).

    Args:
        word: what the user wrote.
        choices: the names that are allowed.
        aliases: other names of a choice, e.g. Keras class names (`MaxPooling2D`) of layer types.

    Returns:
        The suggestion with a leading space, or "".
    """
    choices = [str(c) for c in choices]
    text = str(word)
    folded = {_fold(c): c for c in choices}
    folded.update({_fold(alias): c for alias, c in (aliases or {}).items() if _fold(alias) not in folded})
    match = [folded[_fold(text)]] if _fold(text) in folded else []
    lower = {c.lower(): c for c in choices}
    match = match or [lower[m] for m in difflib.get_close_matches(text.lower(), lower, n=1, cutoff=0.6)]
    # abbreviations: `lr` for learning_rate, `bs` for batch_size
    match = match or [c for c in choices if "_" in c and "".join(p[0] for p in c.split("_")) == text.lower()]
    return f" (did you mean {match[0]!r}?)" if match else ""


def _fold(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def validate(source: yaml_source.Source, schema: Any, data: Any = None,
             prefix: tuple = (), line_path: tuple | None = None):
    """Validate `data` (default: the whole file) against a schema, raising all errors with lines.

    Args:
        source: the parsed file, for lines and `--set` overrides.
        schema: a pydantic model class or any type pydantic can validate.
        data: the value to validate; default: the whole file.
        prefix: the config path of `data`, put in front of each error's path.
        line_path: where to look up lines, when not `prefix` (a block's layers used elsewhere).

    Returns:
        The validated value.

    Raises:
        ConfigError: every problem pydantic found, in plain words, each with its line.
    """
    data = source.data if data is None else data
    try:
        if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
            return schema.model_validate(data)
        return pydantic.TypeAdapter(schema).validate_python(data)
    except pydantic.ValidationError as e:
        errors = e.errors()
    found = [_issue(source, schema, _in_input(err, data), prefix, line_path) for err in errors]
    raise ConfigError(list(dict.fromkeys(f.issue for f in _tidy(found))))


def _in_input(err: dict, data: Any) -> dict:
    """Cut list indices off an error's location where the input had a scalar there.

    `kernel_size: 0` is read as `[0, 0]`: its error belongs at kernel_size, not at
    kernel_size[0] and kernel_size[1], which the file does not have.
    """
    loc, node = err["loc"], data
    for depth, part in enumerate(loc):
        if isinstance(node, dict) and part in node or isinstance(node, list) and (
                isinstance(part, int) and part < len(node)):
            node = node[part]
        elif isinstance(part, int) and not isinstance(node, dict | list) and all(
                isinstance(p, int) for p in loc[depth:]):
            return {**err, "loc": loc[:depth], "input": node}
        elif isinstance(node, dict | list):  # a key pydantic adds (a union member, [key]): skip
            continue
        else:
            break
    return err


class _Found(typing.NamedTuple):
    """One pydantic error turned into an issue, with what `_tidy` needs to merge or drop it."""

    issue: ConfigIssue
    path: tuple  # the whole config path
    kind: str  # pydantic's error type
    got: str  # the value as shown in "(got VALUE)", or "" when the message does not show it
    via_union: bool  # one of the errors of a value that fits none of a union's members


def _tidy(found: list[_Found]) -> list[_Found]:
    """Drop errors that only echo another one and merge the errors of one union value."""
    # "missing 'filters'" says nothing new beside "unknown key 'filtres' (did you mean 'filters'?)"
    suggested = {f.path[:-1] + (m[1],) for f in found if f.kind == "extra_forbidden"
                 for m in [re.search(r"did you mean '([^']*)'", f.issue.message)] if m}
    # pydantic adds "should have at least 2 items after validation" when an item is invalid
    echoes = {f.path for f in found if f.kind == "length_after_validation"}
    broken = {p for f in found for p in echoes
              if f.path[:len(p)] == p and f.kind != "length_after_validation"}
    kept = [f for f in found if not (f.kind == "missing" and f.path in suggested)
            and not (f.kind == "length_after_validation" and f.path in broken)]
    out: list[_Found] = []
    for f in kept:
        if not f.via_union:
            out.append(f)
            continue
        group = [g for g in kept if g.via_union and g.path == f.path]
        if f is not group[0]:
            continue
        # A value of the right type with a bad value says more than "must be a list" from the
        # other members; only when it fits no member at all are all the alternatives listed.
        specific = [g for g in group if g.kind not in _TYPE_KINDS]
        if specific:
            out.extend(specific)
            continue
        whats = [g.issue.message.removesuffix(f" (got {g.got})").removeprefix("must be ") for g in group]
        joiner = ", or " if any(" or " in w for w in whats) else " or "
        message = f"must be {joiner.join(dict.fromkeys(whats))} (got {f.got})"
        out.append(f._replace(issue=dataclasses.replace(f.issue, message=message)))
    return out


_TYPE_KINDS = {"int_type", "int_parsing", "int_from_float", "float_type", "float_parsing",
               "bool_type", "bool_parsing", "string_type", "list_type", "tuple_type", "dict_type",
               "model_type", "model_attributes_type", "literal_error", "none_required"}


def _issue(source, schema, err, prefix, line_path) -> _Found:
    """Turn one pydantic error into a located, readable ConfigIssue."""
    path, model, via_union, is_key, types = _strip_tags(schema, err["loc"])
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    # the augmentation union's errors, not the layer union's: they have words of their own
    augment = any(isinstance(m, type) and issubclass(m, AugmentBase) for t in types for m in _members(t))
    got = _shown(value)
    if kind in ("too_short", "too_long") and isinstance(value, list | tuple) and (
            ctx.get("actual_length") != len(value)):  # counts only the valid items: an echo
        kind = "length_after_validation"
    if kind == "extra_forbidden" and isinstance(model, type) and issubclass(model, AugmentBase) and (
            path[-1] in AUGMENT_KEYS):  # a key of another augmentation type
        own = sorted(set(model.model_fields) - {"type"})
        msg = f"{_tag_of(model)} does not use `{path[-1]}`; it takes {', '.join(own) or 'no options'}"
        got = ""
    elif kind == "extra_forbidden":
        allowed = sorted(model.model_fields) if model else []
        msg = f"unknown key {path[-1]!r}{did_you_mean(path[-1], allowed)}"
        if allowed:
            msg += f"; allowed keys: {', '.join(allowed)}"
        got = ""
    elif kind == "keyed_value_error":  # a model validator's error about one of its keys
        msg, path, got = str(ctx["message"]), path + (ctx["key"],), ""
    elif kind == "union_tag_invalid" and augment:
        tag = ctx.get("tag")
        msg = (f"unknown augmentation type {tag!r}{did_you_mean(tag, AUGMENT_SPECS)}; "
               f"augmentation types: {', '.join(AUGMENT_SPECS)}")
        path, got = path + ("type",), ""
    elif kind in ("union_tag_not_found", "model_attributes_type", "model_type") and augment and (
            not isinstance(value, dict)):
        msg = ("an augmentation layer must be a mapping, e.g. {type: random_flip, mode: horizontal} "
               f"(got {got})")
    elif kind == "union_tag_not_found" and augment:
        typo = next((k for k in value if isinstance(k, str) and did_you_mean(k, ("type",))), None)
        if typo is None:
            msg = f"missing `type:`; give an augmentation type: {', '.join(AUGMENT_SPECS)}"
        else:
            msg = (f"unknown key {typo!r}{did_you_mean(typo, ('type',))}; an augmentation layer needs "
                   f"`type:`, one of {', '.join(AUGMENT_SPECS)}")
            path = path + (typo,)
        got = ""
    elif kind == "union_tag_invalid":
        tag = ctx.get("tag")
        hint = did_you_mean(tag, LAYER_SPECS, aliases=KERAS_LAYER_NAMES)
        msg = f"unknown layer type {tag!r}" + (hint or (  # the suggestion alone: the list is long
            f"; layer types: {', '.join(LAYER_SPECS)} (or `block:` for a block of model.blocks)"))
        path, got = path + ("type",), ""
    elif kind == "union_tag_not_found" and not isinstance(value, dict):
        msg = f"a layer must be a mapping, e.g. {{type: dense, units: 10}} (got {got})"
    elif kind == "union_tag_not_found":
        typo = next((k for k in value if isinstance(k, str) and did_you_mean(k, ("type", "block"))), None)
        if typo is None:
            msg = "missing `type:` (or `block:`); give a layer type such as conv2d or dense"
        else:
            msg = (f"unknown key {typo!r}{did_you_mean(typo, ('type', 'block'))}; a layer needs "
                   "`type:` (a layer type such as conv2d or dense) or `block:`")
            path = path + (typo,)
        got = ""
    elif kind == "missing":
        msg, got = f"missing required key {path[-1]!r}", ""
    elif kind == "literal_error":
        choices = _literal_choices(ctx)
        msg = (f"must be {'one of ' if len(choices) > 1 else ''}{ctx.get('expected')}"
               f"{did_you_mean(value, choices)} (got {got})")
    elif kind == "value_error":
        msg, got = str(ctx.get("error", err["msg"])), ""
    elif kind == "string_pattern_mismatch":
        what = _PATTERNS.get(ctx.get("pattern"), f"must match the pattern {ctx.get('pattern')}")
        msg = f"{'the key ' if is_key else ''}{what} (got {got})"
    elif kind in _MESSAGES:
        msg = f"{_MESSAGES[kind].format(**ctx)} (got {got})"
    else:
        msg = f"{err['msg'][0].lower()}{err['msg'][1:]} (got {got})"
    if isinstance(value, str) and yaml_source.TUPLE_TEXT.fullmatch(value):  # `kernel_size: (3, 3)`
        msg, got, via_union = yaml_source.tuple_message(value[1:-1].split(",")), "", False
    full = tuple(prefix) + tuple(path)
    if isinstance(value, str) and "$" in value and kind != "string_pattern_mismatch" and (
            full[:2] == ("model", "layers")):  # `filters: $f` outside a block template
        msg, got, via_union = (f"{value!r} is a block parameter or expression: `$name` and "
                               "`${...}` work inside the layers of model.blocks templates only"), "", False
    if any(full[:len(o)] == o for o in source.overridden):
        issue = ConfigIssue("--set", None, yaml_source.format_path(full), msg)
    else:
        located = source.issue(tuple(line_path or prefix) + tuple(path), msg)
        issue = ConfigIssue(located.file, located.line, yaml_source.format_path(full), msg)
    return _Found(issue, full, kind, got, via_union)


def _shown(value: Any) -> str:
    """A value as the user wrote it in YAML: null, true, 3, 'text', [1, 2]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number, not .inf or .nan",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
}

_PATTERNS = {
    NAME_PATTERN: "must be a name of letters, digits and underscores, not starting with a digit",
    LAYER_NAME_PATTERN: "must be a name of letters, digits and underscores",
    r"^[A-Za-z0-9_.-]+$": "must be letters, digits, '_', '.' and '-' only",
}


def _literal_choices(ctx: dict) -> list[str]:
    return [c.strip(" '\"") for c in str(ctx.get("expected", "")).replace(" or ", ",").split(",")]


def _strip_tags(schema, loc) -> tuple[tuple, type | None, bool, bool, list]:
    """Drop what is not the user's path from a pydantic error location.

    Pydantic puts the tag of a discriminated-union member (`conv2d`), the name of a plain
    union member (`constrained-float`, `tuple[float, float]`) and `[key]` (the error is in a
    mapping key, not its value) in error locations.

    Returns:
        The user's path; the model class that holds its last key (for "allowed keys"); whether
        a union member's name was dropped; whether the error is about a key; the types the
        schema has at the path (the members of a union there tell which union it is).
    """
    path: list[Any] = []
    types: list[Any] = [schema]
    holder = None
    via_union = is_key = False
    for part in loc:
        if part == "[key]":
            is_key = True
            continue
        members = [m for t in types for m in _members(t) if m is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, pydantic.BaseModel)]
        if isinstance(part, str) and len(members) > 1:
            tagged = [m for m in models if _tag_of(m) == part]
            if tagged:  # a discriminated-union tag
                types = tagged
                continue
            if not any(part in m.model_fields for m in models) and not any(
                    typing.get_origin(m) is dict for m in members):
                via_union = True  # the name of the union member that failed: a model's class
                types = [m for m in models if m.__name__ == part] or [  # name or a type's repr
                    m for m in members if m not in models]
                continue
        holder = models[0] if models else None
        path.append(part)
        nxt: list[Any] = []
        for m in members:
            origin = typing.get_origin(m)
            if m in models and isinstance(part, str) and part in m.model_fields:
                nxt.append(m.model_fields[part].annotation)
            elif origin is list and isinstance(part, int):
                nxt.extend(typing.get_args(m)[:1])
            elif origin is tuple and isinstance(part, int):
                args = typing.get_args(m)
                nxt.extend(args[:1] if args[-1:] == (Ellipsis,) else args[part:part + 1])
            elif origin is dict and isinstance(part, str):
                nxt.append(typing.get_args(m)[1])
        types = nxt
    return (tuple(path), holder if path and isinstance(path[-1], str) else None, via_union, is_key,
            types)


def _tag_of(cls) -> str | None:
    field = getattr(cls, "model_fields", {}).get("type")
    if field is not None and isinstance(field.default, str):
        return field.default
    return "block" if cls.__name__ == "BlockCall" else None


def _members(t) -> list:
    """The concrete types inside Optional / Union / Annotated."""
    origin = typing.get_origin(t)
    if origin is Annotated:
        return _members(typing.get_args(t)[0])
    if origin is Union or str(origin) == "<class 'types.UnionType'>":
        return [m for a in typing.get_args(t) for m in _members(a)]
    return [t]
