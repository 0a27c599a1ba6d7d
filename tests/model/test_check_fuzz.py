"""`cnnctl check` on random configs: random layer types and values (in and out of range, of the
wrong type), random graphs (names, `inputs`, merges) and block templates (`$param`,
`${expression}`, `when`, `repeat`, several inputs), now and then with the sections `check`
also reads (augmentation, data classes and preprocessing, loss). Whatever the config, the
command either passes, or exits 2 with every line of its error located (`FILE:LINE: ...`):
never a traceback. (An error of the whole file, `FILE: YAML syntax error ...`, has no line;
the generated files are always valid YAML mappings, so no such line is accepted here.)

The fields come from the schema (LAYER_SPECS, AUGMENT_SPECS, the section models), so a new
layer type or field is fuzzed without editing this file; the values known to be dangerous (axes,
reshape targets, windows larger than the input, groups, initializer arguments, ...) have
strategies of their own. Sizes stay small enough that no weight tensor is large: in-range
sizes whose product is huge (units: 65536 after a big flatten) make Keras allocate gigabytes.

CNNCTL_FUZZ_EXAMPLES=3000 runs more examples than CI's (about 30 a second)."""

from __future__ import annotations

import math
import os
import re
import traceback
import types
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from cnnctl.config.layer_specs import LAYER_SPECS, InitializerSpec
from cnnctl.config.schema import AUGMENT_SPECS, KERAS_DATASETS, LossConfig, Preprocessing

EXAMPLES = int(os.environ.get("CNNCTL_FUZZ_EXAMPLES", "400"))

# Sizes stay small: a model is built per example (about 30 ms for a few layers on 2 cores), and
# weights grow with kernel * channels * filters and with flatten -> dense.
SIDES = st.one_of(st.sampled_from([1, 2, 3, 5, 8]), st.integers(1, 40))
CHANNELS = st.sampled_from([1, 2, 3, 4, 6])
BASE_FIELDS = ("type", "name", "inputs", "repeat", "when")
# the classes of the data sets `check` knows without loading them
CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}
MERGES = [tag for tag, cls in LAYER_SPECS.items()
          if any(base.__name__ == "MergeBase" for base in cls.__mro__)]

# Values of the wrong kind or out of every range; any field may get one.
WRONG = st.sampled_from([
    0, -1, -7, 65_537, 10**12, 2**63, 2.5, -0.5, 1e308, math.inf, -math.inf, math.nan,
    "3", "abc", "", "$", "${", True, False, None, [], [1, 2, 3], [0, 2], [-1, -1], [[1, 2]],
    {"a": 1}, {"name": "zeros"}, "relu", [None], ["x"],
])


def chance(draw, percent: int) -> bool:
    return draw(st.integers(0, 99)) < percent


# --------------------------------------------------------------------------- values from the schema
def _constraints(items) -> dict:
    """gt/ge/lt/le/min_length/max_length from annotated-types objects and FieldInfos."""
    out = {}
    for item in items:
        if isinstance(item, FieldInfo):
            out.update(_constraints(item.metadata))
        for key in ("gt", "ge", "lt", "le", "min_length", "max_length"):
            if getattr(item, key, None) is not None and not isinstance(item, type):
                out[key] = getattr(item, key)
    return out


def from_type(tp, limits: dict | None = None) -> st.SearchStrategy:
    """Values of a pydantic field type, written as YAML would give them (lists, not tuples):
    mostly near the ends of their range."""
    limits = dict(limits or {})
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return from_type(args[0], {**limits, **_constraints(args[1:])})
    if origin in (typing.Union, types.UnionType):
        return st.one_of([from_type(a, limits) for a in args])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        lo = limits.get("ge", limits["gt"] + 1 if "gt" in limits else -3)
        hi = limits.get("le", limits["lt"] - 1 if "lt" in limits else lo + 8)
        return st.integers(lo, min(hi, lo + 8))
    if tp is float:
        lo = limits.get("ge", limits.get("gt", -2.0))
        hi = limits.get("le", limits.get("lt", lo + 4.0))
        ends = [v for v, open_end in ((lo, "gt" in limits), (hi, "lt" in limits)) if not open_end]
        return st.one_of(st.floats(lo, hi, exclude_min="gt" in limits, exclude_max="lt" in limits,
                                   allow_nan=False, allow_infinity=False),
                         *([st.sampled_from(ends)] if ends else []))
    if tp is str:
        return st.sampled_from(["a", "x1", "input"])
    if origin is list:
        return st.lists(from_type(args[0]), min_size=limits.get("min_length", 0),
                        max_size=min(limits.get("max_length", 4), 4))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(from_type(args[0]), min_size=limits.get("min_length", 1),
                            max_size=limits.get("max_length", 3))
        return st.tuples(*[from_type(a) for a in args]).map(list)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return model_values(tp)
    raise TypeError(f"no strategy for field type {tp!r}; add one to from_type()")


@st.composite
def model_values(draw, cls: type[BaseModel]) -> dict:
    """A mapping for a nested model (an initializer with arguments), often with the arguments of
    another of its kinds."""
    out = {}
    for name, field in cls.model_fields.items():
        if field.is_required() or chance(draw, 30):
            out[name] = draw(field_value(cls, name, field))
    return out


def field_value(cls, name: str, field: FieldInfo) -> st.SearchStrategy:
    # a switch of the same name (batch_norm's `scale`) takes the values of its type only
    targeted = TARGETED.get(name) if field.annotation is not bool else None
    general = from_type(field.annotation, _constraints(field.metadata))
    return st.one_of(targeted, general) if targeted is not None else general


def _pair(values) -> st.SearchStrategy:
    values = st.sampled_from(values) if isinstance(values, list) else values
    return st.one_of(values, st.lists(values, min_size=2, max_size=2))


INITIALIZER_NAMES = list(typing.get_args(InitializerSpec.model_fields["name"].annotation))
INITIALIZER_VALUES = st.sampled_from([0.0, -1.0, 1e-9, "fan_in", "uniform", 3])


@st.composite
def initializers(draw):
    """A name, or a mapping with arguments: mostly its own, now and then another kind's or none
    it takes (`{name: zeros, scale: 2}`), with values of any kind."""
    if chance(draw, 50):
        return draw(st.sampled_from(INITIALIZER_NAMES[:4] + ["HeNormal", "nope"] * chance(draw, 10)))
    name = draw(st.sampled_from(INITIALIZER_NAMES + ["nope"] * chance(draw, 10)))
    keys = list(InitializerSpec.ARGUMENTS.get(name, ()))
    if not keys or chance(draw, 20):
        keys = [k for k in InitializerSpec.model_fields if k != "name"]
    args = draw(st.lists(st.sampled_from(keys), max_size=3, unique=True))
    fields = InitializerSpec.model_fields
    return {"name": name, **{k: draw(st.one_of(INITIALIZER_VALUES, WRONG) if chance(draw, 10)
                                     else from_type(fields[k].annotation, _constraints(fields[k].metadata)))
                             for k in args}}


INITIALIZER = initializers()

# dangerous values, by field name, whichever layer has the field
TARGETED: dict[str, st.SearchStrategy] = {
    "axis": st.integers(-10, 10),
    "target_shape": st.lists(st.sampled_from([-1, -1, 1, 2, 3, 4, 7, 16, 0, -2, 100_000]),
                             min_size=1, max_size=4),
    "kernel_size": _pair(st.one_of(st.integers(1, 5), st.sampled_from([9, 41, 64]))),
    "pool_size": _pair(st.one_of(st.integers(1, 4), st.sampled_from([9, 41, 1000, 65_536]))),
    "strides": _pair(st.one_of(st.integers(1, 3), st.sampled_from([9, 1000, 65_536]))),
    "dilation_rate": _pair(st.sampled_from([1, 1, 1, 2, 3])),
    "groups": st.sampled_from([1, 1, 1, 2, 3, 4, 8]),
    "filters": st.one_of(st.integers(1, 8), st.sampled_from([12, 16])),
    "units": st.one_of(st.integers(1, 8), st.sampled_from([10, 16])),
    "depth_multiplier": st.integers(1, 3),
    "size": _pair(st.sampled_from([1, 2])),
    "height": SIDES, "width": SIDES,
    "cropping": _pair(_pair(st.sampled_from([0, 1, 2, 3, 20, 41]))),
    "noise_shape": st.lists(st.sampled_from([None, 1, 2, 3, 7]), min_size=1, max_size=5),
    "shared_axes": st.lists(st.integers(1, 5), min_size=1, max_size=3),
    "mean": st.one_of(st.floats(-2, 2), st.lists(st.floats(-2, 2), min_size=1, max_size=5)),
    "variance": st.one_of(st.floats(0, 2), st.lists(st.floats(0, 2), min_size=1, max_size=5)),
    "scale": st.one_of(st.floats(-2, 2), st.booleans(),
                       st.lists(st.floats(-2, 2), min_size=1, max_size=5)),
    "offset": st.one_of(st.floats(-2, 2), st.lists(st.floats(-2, 2), min_size=1, max_size=5)),
    "initializer": INITIALIZER, "bias_initializer": INITIALIZER, "alpha_initializer": INITIALIZER,
    # augmentation: fractions of the image, in and past [-1, 1], and reversed ranges
    "factor": st.one_of(st.sampled_from([0.0, 0.1, 0.5, 1.0, 1.5]),
                        st.lists(st.sampled_from([-1.5, -1.0, -0.2, 0.0, 0.3, 1.0, 2.0]),
                                 min_size=2, max_size=2)),
}


def fields_of(draw, cls: type[BaseModel], wrong: int, skip=BASE_FIELDS, needed=()) -> dict:
    """Fields of a schema model: required (and `needed`) ones nearly always, others now and
    then; `wrong` percent of them of the wrong kind, and now and then a misspelt key."""
    out = {}
    for name, field in cls.model_fields.items():
        if name in skip:
            continue
        if not (chance(draw, 97) if field.is_required() or name in needed else chance(draw, 35)):
            continue
        out[name] = draw(WRONG if chance(draw, wrong) else field_value(cls, name, field))
    if wrong and chance(draw, 3):
        out[draw(st.sampled_from(["filtres", "unit", "kernel"]))] = 3
    return out


@st.composite
def layer_fields(draw, tag: str, wrong: int) -> dict:
    """The fields of one layer of type `tag` (not its name, inputs, repeat or when)."""
    cls = LAYER_SPECS.get(tag)
    if cls is None:  # an unknown type: a misspelled one, or Keras's spelling
        return {"type": tag, **({"filters": 4} if chance(draw, 50) else {})}
    out = {"type": tag, **fields_of(draw, cls, wrong)}
    if "negative_slope" in out and chance(draw, 80):  # the activation it is for
        out["activation"] = "leaky_relu"
    if tag == "normalization" and ("mean" in out) != ("variance" in out) and chance(draw, 80):
        out.setdefault("mean", 0.5)  # statistics come in pairs
        out.setdefault("variance", 0.25)
    return out


# every type of the schema, and now and then an unknown one (Keras's spelling, a typo)
LAYER_TYPES = st.sampled_from(sorted(LAYER_SPECS) * 4 + ["conv2d", "dense", "flatten"] * 3
                              + ["Conv2D", "MaxPooling2D", "convolution"])

# --------------------------------------------------------------------------- block templates
EXPRESSIONS = [
    "in_channels * 2", "in_channels", "max(1, in_channels // 4)", "P // 0", "P * 2", "P + 1",
    "P - 100", "2 if copy == 0 else 1", "copy + 1", "copies", "0.3 * block_index / block_count",
    "block_index", "in_height // 2", "in_width - 1", "make_divisible(in_channels * 1.5)",
    "make_divisible(P, 0)", "make_divisible(P, P)", "P ** 100", "P ** 0.5", "-P", "P > 2",
    "P != 1 or in_channels != P", "not P", "P % 0", "float(P)", "int(P)", "round(P / 3)",
    "floor(P / 2)", "ceil(in_height / 3)", "abs(-P)", "unknown_name", "P.real",
    "__import__('os')", "[x for x in range(3)]", "(", "P +", "min()", "max(P)", "int('abc')",
    "1e308 * 1e308", "10 ** 64", "2 ** 65", "lambda: 1", "P[0]", "'a' * 3", "True + 1",
    "in_channels / 0.0", "P if P else P", "in_height * in_width", "P == P", "-1 ** 0.5",
    "(-8) ** 0.5", "int(1e300 * 10)", "round(P, 1)", "make_divisible(P, 8, -P)",
]
PARAM_NAMES = ["p", "q", "filters", "stride"]


@st.composite
def reference(draw, params: list[str]) -> str:
    """A `$param`, `${expression}` or a string with an expression inside."""
    p = draw(st.sampled_from(params or ["copy", "in_channels"]))
    kind = draw(st.integers(0, 9))
    if kind < 3:
        return f"${p if chance(draw, 90) else 'nope'}"
    text = draw(st.sampled_from(EXPRESSIONS)).replace("P", p)
    return f"${{{text}}}" if kind < 9 else f"x_${{{text}}}"


def maybe_wrong(draw, wrong: int, right: st.SearchStrategy):
    """A value of `right`, or `wrong` percent of the time one of WRONG."""
    return draw(WRONG if chance(draw, wrong) else right)


@st.composite
def template_layer(draw, j: int, names: list[str], params: list[str], visible: list[str],
                   wrong: int) -> dict:
    """Layer j of a template: a layer whose values may be `$param` or `${expression}`, or now
    and then a use of another template (or of itself)."""
    if names and chance(draw, 12):
        layer = {"block": draw(st.sampled_from(names + ["nope"] * chance(draw, 20)))}
    else:
        tag = draw(st.sampled_from(MERGES)) if chance(draw, 20) else draw(LAYER_TYPES)
        layer = draw(layer_fields(tag, wrong))
        for key in [k for k in layer if k != "type"]:
            if chance(draw, 30):
                layer[key] = draw(reference(params))
        if layer["type"] in MERGES:
            count = 2 if tag == "subtract" and not wrong else None
            layer["inputs"] = draw(st.lists(st.sampled_from(visible + ["nope"] * chance(draw, 10)),
                                            min_size=count or (1 if wrong else 2),
                                            max_size=count or 3))
    if chance(draw, 60):
        layer["name"] = draw(st.sampled_from([f"l{j}", f"l{j}", f"{j}x{j}", "n_${copy}"]
                                             + ["input"] * (wrong > 0)))
        visible.append(layer["name"])
    if chance(draw, 15):
        layer["when"] = draw(st.one_of(st.booleans(), reference(params)))
    if chance(draw, 10):
        layer["repeat"] = maybe_wrong(draw, wrong, st.one_of(st.integers(0, 2), reference(params)))
    if "inputs" not in layer and chance(draw, 20):
        layer["inputs"] = draw(st.lists(st.sampled_from(visible), min_size=1, max_size=2))
    return layer


@st.composite
def templates(draw, wrong: int) -> dict:
    """model.blocks: 0-3 templates, some unused, some with two inputs or nested block uses."""
    names = draw(st.lists(st.sampled_from(["b", "c", "stage", "up"]), min_size=1, max_size=3,
                          unique=True))
    out = {}
    for name in names:
        params = draw(st.lists(st.sampled_from(PARAM_NAMES + ["in_channels"] * (wrong > 0)),
                               max_size=3, unique=True))
        template: dict = {"params": {p: maybe_wrong(draw, wrong, st.one_of(
            st.integers(1, 4), st.integers(1, 4), st.none())) for p in params}}
        input_names = ["input"]
        if chance(draw, 25):
            input_names = draw(st.sampled_from([["x", "skip"], ["x"], ["input", "skip"]]
                                               + [["x", "x"]] * (wrong > 0)))
            template["inputs"] = input_names
        visible = list(input_names)
        template["layers"] = [draw(template_layer(j, names, params, visible, wrong))
                              for j in range(draw(st.integers(0 if wrong else 1, 4)))]
        if wrong and chance(draw, 5):
            template[draw(st.sampled_from(["layer", "param"]))] = []
        out[name] = template
    return out


# --------------------------------------------------------------------------- other sections
@st.composite
def augmentation_section(draw, wrong: int) -> dict:
    """augmentation: 1-3 items of random types (built on the input shape by `check`)."""
    items = []
    for _ in range(draw(st.integers(1, 3))):
        tag = draw(st.sampled_from(sorted(AUGMENT_SPECS)))
        cls = AUGMENT_SPECS[tag]
        needed = [draw(st.sampled_from(group)) for group in cls.NEEDS]  # any one of a group
        items.append({"type": tag, **fields_of(draw, cls, wrong, skip=("type",), needed=needed)})
    placement = draw(st.sampled_from([{}, {"placement": "pipeline"}, {"placement": "model"}]))
    return {**placement, "layers": items}


@st.composite
def data_section(draw, wrong: int) -> dict:
    """data: a source whose classes `check` knows without reading images (keras data sets), or
    one it cannot read (a missing .npz), with preprocessing whose normalize may not fit the
    channels."""
    source = draw(st.sampled_from([{"source": "keras", "name": n} for n in KERAS_DATASETS]
                                  + [{"source": "npz", "path": "missing.npz"}]))
    if chance(draw, 50):
        channels = st.lists(st.floats(0.1, 1.0), min_size=1, max_size=4)
        prep = fields_of(draw, Preprocessing, wrong, skip=("normalize",))
        if chance(draw, 70):
            prep["normalize"] = {"mean": draw(channels), "std": draw(channels)}
        source["preprocessing"] = prep
    return source


def sections(draw, wrong: int) -> dict:
    """The sections besides `model` that `check` reads, each now and then."""
    out = {}
    if chance(draw, 15):
        out["augmentation"] = draw(augmentation_section(wrong))
    if chance(draw, 15):
        out["data"] = draw(data_section(wrong))
    if chance(draw, 15):
        out["loss"] = fields_of(draw, LossConfig, wrong, skip=())
    return out


# --------------------------------------------------------------------------- whole configs
@st.composite
def block_use(draw, blocks: dict, previous: str | None, visible: list[str], wrong: int) -> dict:
    name = draw(st.sampled_from(sorted(blocks) + ["nope"] * chance(draw, wrong)))
    layer: dict = {"block": name}
    template = blocks.get(name, {})
    for p, default in template.get("params", {}).items():
        if default is None or chance(draw, 50):
            layer[p] = maybe_wrong(draw, wrong, st.integers(1, 6))
    if chance(draw, wrong // 3):
        layer["nope"] = 1
    wanted = len(template.get("inputs", ["input"]))
    if wanted > 1 or chance(draw, 20):
        first = [previous] if previous else []
        layer["inputs"] = first + draw(st.lists(st.sampled_from(visible),
                                                min_size=max(wanted - len(first), 0),
                                                max_size=max(wanted - len(first), 0) + (wrong > 0)))
    return layer


@st.composite
def configs(draw, wrong: int | None = None) -> dict:
    """A config: a `model:` section, now and then other sections `check` reads (no data is
    loaded). Most are valid for the schema, so that the model is built; others have `wrong`
    percent of their values of the wrong kind (a single one keeps every model from being built)."""
    if wrong is None:
        wrong = draw(st.sampled_from([0] * 7 + [2, 10, 30]))
    blocks = draw(templates(wrong)) if chance(draw, 40) else {}
    if not chance(draw, wrong):  # mostly an image, now and then a vector or a matrix
        sides = draw(st.sampled_from([2, 2, 2, 0, 1]))
        shape = draw(st.lists(st.one_of(SIDES, st.none()) if chance(draw, 15) else SIDES,
                              min_size=sides, max_size=sides)) + [draw(CHANNELS)]
    else:
        shape = draw(st.one_of(WRONG, st.lists(st.one_of(WRONG, SIDES), max_size=4)))
    layers, visible = [], ["input"]
    previous = "input"  # the name of the layer before (None: it has none)
    for i in range(draw(st.integers(1, 6))):
        if blocks and chance(draw, 30):
            layer = draw(block_use(blocks, previous, visible, wrong))
        else:
            tag = draw(st.sampled_from(MERGES)) if chance(draw, 20) else draw(LAYER_TYPES)
            layer = draw(layer_fields(tag, wrong))
            if tag in MERGES:  # the layer before and others, of other shapes now and then
                first = [previous] if previous and chance(draw, 80) else []
                count = 2 - len(first) if tag == "subtract" and not wrong else None
                layer["inputs"] = first + draw(st.lists(
                    st.sampled_from(visible + ["nope"] * chance(draw, wrong)),
                    min_size=count or (1 if wrong else 2 - len(first)), max_size=count or 2))
            elif chance(draw, 15):  # two of them for a layer that takes one, now and then
                layer["inputs"] = draw(st.lists(st.sampled_from(visible), min_size=1,
                                                max_size=1 + chance(draw, 30)))
        if wrong and chance(draw, 5):  # `$p` outside a template: an error at its line
            key = draw(st.sampled_from(sorted(layer)))
            layer[key] = draw(reference(list(layer)))
        if chance(draw, 10):
            layer["repeat"] = maybe_wrong(draw, wrong, st.integers(0, 3))
        if chance(draw, 8):
            layer["when"] = maybe_wrong(draw, wrong, st.booleans())
        if chance(draw, 60):
            name = draw(st.sampled_from([f"l{i}"] * 4 + [f"l{max(i - 1, 0)}"]
                                        + ["input", "1st"] * (wrong > 0)))
            layer["name"] = name
            visible.append(name)
            if "block" in layer:  # the layers of its instance are visible after it, too
                visible += [f"{name}_{t.get('name')}" for t in
                            blocks.get(layer["block"], {}).get("layers", [])
                            if isinstance(t.get("name"), str) and "$" not in t["name"]]
            previous = name
        else:
            previous = None
        layers.append(layer)
    others = sections(draw, wrong)
    if chance(draw, 40):  # a classifier's head, mostly of as many units as the data's classes
        units = CLASSES.get(others.get("data", {}).get("name"), 3) if chance(draw, 80) else 3
        layers += [{"type": "flatten"}, {"type": "dense", "units": units, "activation": "softmax"}]
    model = {"input_shape": shape, **({"blocks": blocks} if blocks else {}), "layers": layers}
    return {"model": model, **others}


def to_yaml(config: dict) -> str:
    # one mapping a line for flat values (as configs/ are written), block style above them
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=1000)


# --------------------------------------------------------------------------- the property
_TABLE = re.compile(r"^\S+ \((sequential|functional)\) from ")


def check_problems(result, path: Path, text: str) -> list[str]:
    """What is wrong with the outcome of `cnnctl check path` (nothing: it passed, or exited 2
    with only located error lines)."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return ["an exception escaped: " + "".join(traceback.format_exception(*result.exc_info))]
    if result.exit_code == 0:
        if not _TABLE.match(result.stdout) or "Traceback" in result.stderr:
            return ["exit 0 without the layer table on stdout, or with a traceback on stderr"]
        return []
    if result.exit_code != 2:
        return [f"exit code {result.exit_code}, expected 0 or 2"]
    lines = result.stderr.splitlines()
    problems = [] if lines else ["exit 2 with nothing on stderr"]
    if result.stdout:
        problems.append("exit 2 with output on stdout")
    last = len(text.splitlines())
    located = re.compile(rf"^{re.escape(str(path))}:(\d+): \S")
    for line in lines:
        match = located.match(line)
        if not match:
            problems.append(f"not located at FILE:LINE: {line!r}")
        elif not 1 <= int(match[1]) <= last:
            problems.append(f"line {match[1]} is not in the file ({last} lines): {line!r}")
    return problems


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(config=configs())
def test_check_passes_or_gives_located_errors(cnnctl, fuzz_file, config):
    text = to_yaml(config)
    fuzz_file.write_text(text, encoding="utf-8")
    result = cnnctl("check", fuzz_file)
    problems = check_problems(result, fuzz_file, text)
    if problems:  # what reproduces it: the file and what the command printed
        pytest.fail("\n".join(problems) + f"\n--- {fuzz_file.name} (`cnnctl check` it to "
                    f"reproduce)\n{text}--- exit {result.exit_code}, stdout\n{result.stdout}"
                    f"--- stderr\n{result.stderr}", pytrace=False)
