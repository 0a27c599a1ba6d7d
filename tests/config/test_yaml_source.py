"""yaml_source: safe parsing, the line of every config path, and refused duplicates and tags."""

import textwrap
import time

import pytest

from cnnctl.config import yaml_source
from cnnctl.errors import ConfigError


def parse(text: str) -> yaml_source.Source:
    return yaml_source.parse(textwrap.dedent(text).lstrip("\n"), "c.yaml")


def errors(text: str) -> list[str]:
    """The printed lines of the ConfigError that parsing `text` raises."""
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value).splitlines()


# --------------------------------------------------------------------------- plain data and lines
def test_lines_of_keys_and_list_items():
    source = parse("""
        # a comment
        model:
          input_shape: [28, 28, 1]
          layers:
            - type: conv2d
              filters: 8
            - {type: dense, units: 10}
        """)
    assert source.data == {"model": {"input_shape": [28, 28, 1], "layers": [
        {"type": "conv2d", "filters": 8}, {"type": "dense", "units": 10}]}}
    assert source.line(("model",)) == 2
    assert source.line(("model", "input_shape")) == 3
    assert source.line(("model", "layers", 0)) == 5
    assert source.line(("model", "layers", 0, "filters")) == 6
    assert source.line(("model", "layers", 1, "units")) == 7
    # a path not in the file falls back to its nearest ancestor that is
    assert source.line(("model", "layers", 0, "kernel_size")) == 5
    assert source.issue(("model", "layers", 1, "units"), "bad").__str__() == (
        "c.yaml:7: model.layers[1].units: bad")


def test_format_path():
    assert yaml_source.format_path(("model", "layers", 3, "kernel_size", 1)) == "model.layers[3].kernel_size[1]"
    assert yaml_source.format_path(("metrics", 0)) == "metrics[0]"
    assert yaml_source.format_path(()) == ""


def test_exponent_floats_and_keys_as_written():
    # YAML 1.1 reads `1e-3` as a string; people write learning rates that way.
    source = parse("""
        a: 1e-3
        b: 5E+4
        c: 1.5e-2
        d: 1e3x
        on: 1
        2: x
        """)
    assert source.data == {"a": 0.001, "b": 50000.0, "c": 0.015, "d": "1e3x", "on": 1, "2": "x"}
    assert isinstance(source.data["b"], float)


# --------------------------------------------------------------------------- syntax errors
def test_syntax_error_unclosed_list_points_at_its_opening_line():
    assert errors("""
        model:
          input_shape: [28, 28, 1
          layers: []
        """) == ["c.yaml:2: YAML syntax error: the `[` opened on this line is not closed "
                 "(expected ',' or ']', but got ':' on line 3)"]


def test_syntax_error_unclosed_mapping():
    assert errors("""
        model:
          layers:
            - {type: dense, units: 3
            - {type: dense}
        """) == ["c.yaml:3: YAML syntax error: the `{` opened on this line is not closed "
                 "(expected ',' or '}', but got '{' on line 4)"]


def test_syntax_error_bad_indentation_points_at_the_line():
    assert errors("""
        model:
          input_shape: [28, 28, 1]
           layers: []
        """) == ["c.yaml:3: YAML syntax error: this line's indentation does not fit the mapping "
                 "that starts on line 2; indent keys of one mapping (and items of one list) equally"]


def test_syntax_error_unclosed_quote_points_at_the_quote_not_the_end():
    assert errors("""
        model:
          name: "abc
          input_shape: [1]
        """) == ["c.yaml:2: YAML syntax error: a quoted string starts on this line and is never closed"]


def test_syntax_error_backslash_in_double_quotes():
    assert errors("""
        data:
          path: "C:\\data\\mnist.npz"
        """) == ["c.yaml:2: YAML syntax error: found unknown escape character 'd' in a double-quoted "
                 "string; use single quotes, or write a backslash as \\\\"]


def test_syntax_error_list_item_then_key():
    assert errors("""
        model:
          - conv2d
          input_shape: [1]
        """) == ["c.yaml:3: YAML syntax error: this line's indentation does not fit the list that "
                 "starts on line 2; indent keys of one mapping (and items of one list) equally"]


def test_syntax_error_tab():
    assert errors("model:\n\tinput_shape: [1]\n") == [
        "c.yaml:2: YAML syntax error: a tab character; indent YAML with spaces only"]


def test_syntax_error_colon_in_value():
    assert errors("run: name: x\n") == [
        "c.yaml:1: YAML syntax error: unexpected `: ` inside a value; put quotes around a value "
        "that contains ': '"]


def test_undefined_alias():
    assert errors("""
        model:
          input_shape: *shape
        """) == ["c.yaml:2: YAML syntax error: alias *shape is used before any `&shape` anchor defines it"]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(text):
    assert errors(text) == ["c.yaml:1: the file is empty; a config needs at least a `model:` section"]


# --------------------------------------------------------------------------- duplicate keys
def test_duplicate_top_level_key():
    assert errors("""
        model:
          input_shape: [28, 28, 1]
        train: {epochs: 1}
        model:
          input_shape: [1]
        """) == ["c.yaml:4: model: duplicate key 'model' (first given on line 1); keep only one"]


def test_duplicate_keys_nested_in_list_items_and_flow_mappings_all_reported():
    assert errors("""
        model:
          input_shape: [28, 28, 1]
          input_shape: [32, 32, 3]
          layers:
            - type: dense
              units: 3
              units: 4
            - {type: dense, units: 3, units: 5}
        """) == [
        "c.yaml:3: model.input_shape: duplicate key 'input_shape' (first given on line 2); keep only one",
        "c.yaml:7: model.layers[0].units: duplicate key 'units' (first given on line 6); keep only one",
        "c.yaml:8: model.layers[1].units: duplicate key 'units' (first given on line 8); keep only one",
    ]


def test_key_that_is_a_list_is_refused_not_a_crash():
    assert errors("""
        model:
          ? [a, b]
          : 1
        """) == ["c.yaml:2: model: a key must be a name, not a list or a mapping"]


# --------------------------------------------------------------------------- tags
def test_python_tag_refused_with_its_line_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    assert errors(f"""
        model:
          input_shape: [28, 28, 1]
          name: !!python/object/apply:os.system ["touch {marker}"]
        """) == ["c.yaml:3: model.name: YAML tag '!!python/object/apply:os.system' is not allowed: "
                 "configs are plain YAML (no python objects or custom tags); remove the tag"]
    assert not marker.exists()


def test_python_tags_in_keys_lists_and_anchors_never_run(tmp_path):
    marker = tmp_path / "ran"
    lines = errors(f"""
        defaults: &d {{x: !!python/object/apply:os.system ["touch {marker}"]}}
        model:
          ? !!python/object/apply:os.system ["touch {marker}"]
          : 1
          layers:
            - !!python/object/new:os.system ["touch {marker}"]
            - {{<<: *d}}
        """)
    assert not marker.exists()
    assert [line.split(": YAML tag")[0] for line in lines] == [
        "c.yaml:1: defaults.x", "c.yaml:1: model.layers[1].x", "c.yaml:3: model",
        "c.yaml:6: model.layers[0]"]
    assert all("is not allowed" in line for line in lines)


def test_custom_tag_refused():
    assert errors("""
        model:
          input_shape: !shape [28, 28, 1]
        """) == ["c.yaml:2: model.input_shape: YAML tag '!shape' is not allowed: configs are plain "
                 "YAML (no python objects or custom tags); remove the tag"]


def test_plain_yaml_tags_allowed():
    assert parse("a: !!str 3\nb: !!float 1\n").data == {"a": "3", "b": 1.0}


# --------------------------------------------------------------------------- anchors and merges
def test_anchors_and_merge_keys():
    source = parse("""
        model:
          layers:
            - &conv {type: conv2d, filters: 8, kernel_size: 3}
            - *conv
            - <<: *conv
              filters: 16
        """)
    layers = source.data["model"]["layers"]
    assert layers[0] == layers[1] == {"type": "conv2d", "filters": 8, "kernel_size": 3}
    assert layers[2] == {"type": "conv2d", "filters": 16, "kernel_size": 3}
    # the explicit key wins, and so does its line (not the anchor's)
    assert source.line(("model", "layers", 2, "filters")) == 6
    assert source.line(("model", "layers", 2, "kernel_size")) == 3


def test_merge_of_a_scalar_refused():
    assert errors("""
        layers:
          - {<<: 3, type: dense}
        """) == ["c.yaml:2: layers[0]: `<<:` merges an alias of a mapping, e.g. `<<: *defaults`, "
                 "or a list of them"]


def test_duplicate_key_beside_a_merge():
    assert errors("""
        base: &b {type: conv2d}
        layer: {<<: *b, filters: 16, filters: 3}
        """) == ["c.yaml:2: layer.filters: duplicate key 'filters' (first given on line 2); keep only one"]


def test_recursive_alias_refused_not_a_crash():
    assert errors("model: &a [1, *a]\n") == [
        "c.yaml:1: model[1]: this alias refers to a list or mapping that contains it"]


def test_alias_bomb_refused_quickly():
    rows = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    start = time.perf_counter()
    lines = errors("\n".join(rows) + "\n")
    assert time.perf_counter() - start < 5
    assert len(lines) == 1
    assert lines[0].endswith(f"the file expands to more than {yaml_source.MAX_VALUES:,} values; "
                             "aliases (*name) are nested too deep")


# --------------------------------------------------------------------------- `(3, 3)` in a flow mapping
def test_parentheses_split_by_a_flow_mapping_say_to_write_brackets():
    # `{kernel_size: (3, 3)}` reads as kernel_size: "(3" and a key "3)"; two such pairs would
    # also make "3)" a duplicate key
    assert errors("""
        model:
          layers:
            - {type: conv2d, filters: 8, kernel_size: (3, 3), strides: (2, 2, ), activation: relu}
            - {type: max_pool2d,
               pool_size: (3, 3)}
        """) == [
        "c.yaml:3: model.layers[0].kernel_size: (3, 3) is not a YAML list; write [3, 3]",
        "c.yaml:3: model.layers[0].strides: (2, 2) is not a YAML list; write [2, 2]",
        "c.yaml:5: model.layers[1].pool_size: (3, 3) is not a YAML list; write [3, 3]",
    ]


def test_parentheses_in_text_are_kept():
    source = parse("""
        a: {name: (draft), b: 1}
        c: (3, 3)
        d: {e: (x, y: 2}
        """)
    assert source.data == {"a": {"name": "(draft)", "b": 1}, "c": "(3, 3)", "d": {"e": "(x", "y": 2}}
