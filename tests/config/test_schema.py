"""The config schema checks each `augmentation.layers` item by its type (a discriminated union on
`type`): its own keys only, the ones it needs, old runs' null-filled items, the JSON schema."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cnnctl.config import load as config_lib
from cnnctl.config import schema as schema_lib
from cnnctl.errors import ConfigError

OLD_RUN_CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "run_0.1.0" / "finished" / "config.yaml"

# line 4 is augmentation.layers[0]
HEAD = "model: {input_shape: [28, 28, 1]}\naugmentation:\n  layers:\n"

# every type with all of its keys
FULL = {
    "random_flip": {"mode": "vertical"},
    "random_rotation": {"factor": 0.1, "fill_mode": "nearest"},
    "random_zoom": {"factor": 0.2, "height_factor": [-0.1, 0.3], "width_factor": 0.25,
                    "fill_mode": "constant"},
    "random_translation": {"factor": 0.1, "height_factor": 0.2, "width_factor": [0.0, 0.1],
                           "fill_mode": "wrap"},
    "random_contrast": {"factor": [0.2, 0.4]},
    "random_brightness": {"factor": 0.3},
    "random_crop": {"height": 36, "width": 40, "fill_mode": "reflect"},
    "rand_augment": {"num_ops": 3, "factor": 0.4, "interpolation": "nearest"},
    "aug_mix": {"num_chains": 2, "chain_depth": 2, "factor": [0.1, 0.3], "alpha": 0.5,
                "all_ops": False, "interpolation": "bilinear"},
    "mix_up": {"alpha": 0.4},
    "cut_mix": {"factor": [0.2, 0.8]},
    "random_erasing": {"factor": 0.5, "scale": [0.1, 0.2], "fill_value": 0.0},
    "random_grayscale": {"factor": 0.3},
    "random_color_jitter": {"brightness_factor": 0.2, "contrast_factor": 0.3,
                            "saturation_factor": [0.3, 0.7], "hue_factor": 0.1},
}
# the least each type needs
MINIMAL = {
    "random_flip": {},
    "random_rotation": {"factor": 0.1},
    "random_zoom": {"factor": 0.2},
    "random_translation": {"height_factor": 0.1, "width_factor": 0.2},
    "random_contrast": {"factor": 0.5},
    "random_brightness": {"factor": 0.5},
    "random_crop": {"height": 32, "width": 32},
    "rand_augment": {},
    "aug_mix": {},
    "mix_up": {},
    "cut_mix": {},
    "random_erasing": {},
    "random_grayscale": {},
    "random_color_jitter": {"hue_factor": 0.1},
}
FLAT_KEYS = ("mode", "factor", "height_factor", "width_factor", "height", "width", "fill_mode",
             "num_ops", "interpolation", "num_chains", "chain_depth", "alpha", "all_ops", "scale",
             "fill_value", "brightness_factor", "contrast_factor", "saturation_factor",
             "hue_factor")


def placed(tag: str) -> list[str]:
    """The override a type needs besides its keys: mix_up and cut_mix run in the pipeline."""
    return ["augmentation.placement=pipeline"] if tag in schema_lib.LABEL_MIXING else []


def flow(item: dict) -> str:
    """An item as one YAML flow mapping: `{type: random_flip, mode: vertical}`."""
    def value(v):
        if v is None:
            return "null"
        return f"[{', '.join(str(x) for x in v)}]" if isinstance(v, list) else str(v)

    return "{" + ", ".join(f"{k}: {value(v)}" for k, v in item.items()) + "}"


@pytest.fixture
def write_items(write_yaml):
    """Write a config whose augmentation.layers are these items (item i on line 4 + i)."""

    def write(*items):
        return write_yaml(HEAD + "".join(f"    - {flow(i) if isinstance(i, dict) else i}\n"
                                         for i in items))

    return write


@pytest.fixture
def load_items(write_items):
    """The LoadedConfig of a config with these augmentation items."""

    def load(*items, overrides=None):
        return config_lib.load(write_items(*items), overrides)

    return load


@pytest.fixture
def errors(write_items):
    """The lines of the ConfigError of a config with these items, without the file name."""

    def errors_of(*items, overrides=None):
        path = write_items(*items)
        with pytest.raises(ConfigError) as e:
            config_lib.load(path, overrides)
        return [line.removeprefix(f"{path}:") for line in str(e.value).splitlines()]

    return errors_of


def layer_configs(config) -> list[dict]:
    """The Keras config of each augmentation layer, without its (generated) name."""
    from cnnctl.model import inputs

    layers = inputs.augmentation_layers(config.augmentation, seed=config.train.seed)
    return [(type(layer).__name__, {k: v for k, v in layer.get_config().items() if k != "name"})
            for layer in layers]


# --------------------------------------------------------------------------- what each type takes
@pytest.mark.parametrize("tag", list(FULL))
def test_each_type_accepts_all_its_keys(load_items, tag):
    loaded = load_items({"type": tag, **FULL[tag]}, overrides=placed(tag))
    spec = loaded.config.augmentation.layers[0]
    assert type(spec) is schema_lib.AUGMENT_SPECS[tag]
    assert spec.type == tag
    for key, value in FULL[tag].items():  # a [low, high] list is the (low, high) Keras takes
        assert getattr(spec, key) == (tuple(value) if isinstance(value, list) else value)
    assert set(spec.model_dump()) == {"type", *FULL[tag]}  # and no key of another type


@pytest.mark.parametrize("tag", list(MINIMAL))
def test_each_type_needs_only_its_needed_keys(load_items, tag):
    loaded = load_items({"type": tag, **MINIMAL[tag]}, overrides=placed(tag))
    spec = loaded.config.augmentation.layers[0]
    assert all(getattr(spec, key) is None for key in set(spec.model_fields) - {"type", *MINIMAL[tag]})


def test_the_schema_lists_every_type():
    assert list(schema_lib.AUGMENT_SPECS) == list(FULL)
    assert schema_lib.AUGMENT_KEYS == set(FLAT_KEYS)


# --------------------------------------------------------------------------- keys of another type
FOREIGN = [
    ("random_flip", "factor", 0.2, "mode"),
    ("random_flip", "fill_mode", "reflect", "mode"),
    ("random_rotation", "mode", "vertical", "factor, fill_mode"),
    ("random_rotation", "height_factor", 0.1, "factor, fill_mode"),
    ("random_zoom", "height", 30, "factor, fill_mode, height_factor, width_factor"),
    ("random_translation", "mode", "horizontal", "factor, fill_mode, height_factor, width_factor"),
    ("random_contrast", "fill_mode", "reflect", "factor"),
    ("random_brightness", "width_factor", 0.2, "factor"),
    ("random_crop", "factor", 0.1, "fill_mode, height, width"),
]


@pytest.mark.parametrize("tag, key, value, takes", FOREIGN)
def test_a_key_of_another_type_is_an_error_at_its_line(errors, tag, key, value, takes):
    item = {"type": tag, **MINIMAL[tag], key: value}
    assert errors({"type": "random_flip"}, item) == [
        f"5: augmentation.layers[1].{key}: {tag} does not use `{key}`; it takes {takes}"]


def test_a_key_of_another_type_on_its_own_line(errors):
    lines = ["type: random_crop\n      height: 40\n      width: 40\n      mode: horizontal"]
    assert errors(*lines) == [
        "7: augmentation.layers[0].mode: random_crop does not use `mode`; it takes fill_mode, height, width"]


def test_every_foreign_key_is_reported(errors):
    assert errors({"type": "random_flip", "factor": 0.1, "height": 3}) == [
        "4: augmentation.layers[0].factor: random_flip does not use `factor`; it takes mode",
        "4: augmentation.layers[0].height: random_flip does not use `height`; it takes mode"]


def test_a_key_of_no_type_is_an_unknown_key(errors):
    assert errors({"type": "random_rotation", "factr": 0.1}) == [
        "4: augmentation.layers[0].factr: unknown key 'factr' (did you mean 'factor'?); "
        "allowed keys: factor, fill_mode, type"]


def test_a_foreign_key_from_set_names_the_override(errors):
    assert errors({"type": "random_flip"}, overrides=["augmentation.layers[0].factor=0.1"]) == [
        "--set: augmentation.layers[0].factor: random_flip does not use `factor`; it takes mode"]


# --------------------------------------------------------------------------- needed keys
NEEDED = [
    ({"type": "random_rotation"}, "factor", "random_rotation needs `factor`"),
    ({"type": "random_rotation", "fill_mode": "wrap"}, "factor", "random_rotation needs `factor`"),
    ({"type": "random_zoom", "width_factor": 0.1}, "height_factor",
     "random_zoom needs `height_factor` or `factor`"),
    ({"type": "random_translation", "width_factor": 0.1}, "height_factor",
     "random_translation needs `height_factor` or `factor`"),
    ({"type": "random_translation", "height_factor": 0.1}, "width_factor",
     "random_translation needs `width_factor` or `factor`"),
    ({"type": "random_contrast"}, "factor", "random_contrast needs `factor`"),
    ({"type": "random_brightness", "factor": None}, "factor", "random_brightness needs `factor`"),
    ({"type": "random_crop", "width": 40}, "height", "random_crop needs `height`"),
    ({"type": "random_crop", "height": 40}, "width", "random_crop needs `width`"),
]


@pytest.mark.parametrize("item, key, message", NEEDED)
def test_a_missing_needed_key_is_named(errors, item, key, message):
    assert errors({"type": "random_flip"}, item) == [f"5: augmentation.layers[1].{key}: {message}"]


def test_factor_stands_for_both_factors(load_items):
    loaded = load_items({"type": "random_translation", "factor": 0.1},
                           {"type": "random_zoom", "height_factor": 0.1})
    assert [type(s).__name__ for s in loaded.config.augmentation.layers] == [
        "RandomTranslation", "RandomZoom"]


def test_random_crop_pads_with_constant_or_reflect_only(errors):
    assert errors({"type": "random_crop", "height": 40, "width": 40, "fill_mode": "nearest"}) == [
        "4: augmentation.layers[0].fill_mode: random_crop pads with constant (zeros) or reflect, "
        "not nearest"]


def test_a_bad_value_still_says_what_it_must_be(errors):
    assert errors({"type": "random_flip", "mode": "sideways"}) == [
        "4: augmentation.layers[0].mode: must be one of 'horizontal', 'vertical' or "
        "'horizontal_and_vertical' (got 'sideways')"]
    assert errors({"type": "random_crop", "height": 0, "width": 40}) == [
        "4: augmentation.layers[0].height: must be > 0 (got 0)"]


# --------------------------------------------------------------------------- the type itself
TYPES = ("random_flip, random_rotation, random_zoom, random_translation, random_contrast, "
         "random_brightness, random_crop, rand_augment, aug_mix, mix_up, cut_mix, "
         "random_erasing, random_grayscale, random_color_jitter")


def test_an_unknown_type_suggests_the_closest(errors):
    assert errors({"type": "random_flp"}) == [
        f"4: augmentation.layers[0].type: unknown augmentation type 'random_flp' (did you mean "
        f"'random_flip'?); augmentation types: {TYPES}"]
    assert errors({"type": "RandomRotation", "factor": 0.1}) == [  # the Keras class name
        f"4: augmentation.layers[0].type: unknown augmentation type 'RandomRotation' (did you "
        f"mean 'random_rotation'?); augmentation types: {TYPES}"]
    assert errors({"type": "cutout"}) == [
        f"4: augmentation.layers[0].type: unknown augmentation type 'cutout'; augmentation types: {TYPES}"]


def test_a_layer_type_is_not_an_augmentation_type(errors):
    assert errors({"type": "dense"}) == [
        f"4: augmentation.layers[0].type: unknown augmentation type 'dense'; augmentation types: {TYPES}"]


def test_a_missing_type(errors):
    assert errors({"mode": "horizontal"}) == [
        f"4: augmentation.layers[0]: missing `type:`; give an augmentation type: {TYPES}"]
    assert errors({"typ": "random_flip"}) == [
        f"4: augmentation.layers[0].typ: unknown key 'typ' (did you mean 'type'?); an augmentation "
        f"layer needs `type:`, one of {TYPES}"]


def test_an_item_that_is_not_a_mapping(errors):
    assert errors("random_flip") == [
        "4: augmentation.layers[0]: an augmentation layer must be a mapping, e.g. "
        "{type: random_flip, mode: horizontal} (got 'random_flip')"]


def test_model_layer_errors_keep_their_words(write_yaml):
    path = write_yaml("model:\n  input_shape: [28, 28, 1]\n  layers:\n    - {type: flaten}\n"
                      "    - {units: 3}\n")
    with pytest.raises(ConfigError) as e:
        config_lib.load(path)
    assert [i.message for i in e.value.issues] == [
        "unknown layer type 'flaten' (did you mean 'flatten'?)",
        "missing `type:` (or `block:`); give a layer type such as conv2d or dense"]


# --------------------------------------------------------------------------- runs of cnnctl 0.1
def old_style(tag: str, given: dict) -> dict:
    """An item as cnnctl 0.1 wrote it in a run's config.yaml: every key of every type."""
    return {"type": tag, **{key: given.get(key) for key in FLAT_KEYS}}


@pytest.mark.parametrize("tag", list(FULL))
def test_an_old_style_item_full_of_nulls_is_the_same_item(load_items, tag):
    old = load_items(old_style(tag, MINIMAL[tag]), overrides=placed(tag))
    new = load_items({"type": tag, **MINIMAL[tag]}, overrides=placed(tag))
    assert old.config.augmentation.layers == new.config.augmentation.layers
    assert old.config.model_dump() == new.config.model_dump()  # what a run's config.yaml gets now
    assert layer_configs(old.config) == layer_configs(new.config)


def test_an_old_style_item_with_a_foreign_value_is_still_an_error(errors):
    item = old_style("random_crop", {"height": 40, "width": 40, "mode": "horizontal"})
    assert errors(item) == [
        "4: augmentation.layers[0].mode: random_crop does not use `mode`; it takes fill_mode, height, width"]


def test_an_unknown_null_key_is_still_unknown(errors):
    assert errors({"type": "random_flip", "facter": None}) == [
        "4: augmentation.layers[0].facter: unknown key 'facter'; allowed keys: mode, type"]


def test_the_old_run_fixture_loads_with_the_same_layers(write_yaml):
    old = config_lib.load(OLD_RUN_CONFIG).config
    assert [s.model_dump() for s in old.augmentation.layers] == [
        {"type": "random_crop", "height": 28, "width": 28, "fill_mode": None},
        {"type": "random_flip", "mode": None}]
    new = config_lib.load(write_yaml(
        HEAD + "    - {type: random_crop, height: 28, width: 28}\n    - {type: random_flip}\n"
        f"train: {{seed: {old.train.seed}}}\n")).config
    assert layer_configs(old) == layer_configs(new)
    assert [name for name, _ in layer_configs(old)] == ["RandomPadCrop", "RandomFlip"]
    assert layer_configs(old)[1][1]["mode"] == "horizontal_and_vertical"
    assert layer_configs(old)[0][1]["fill_mode"] == "constant"


def test_layers_keep_their_seeds_and_defaults(load_items):
    from cnnctl.model import inputs

    loaded = load_items(*({"type": tag, **MINIMAL[tag]} for tag in MINIMAL),
                        overrides=placed("mix_up"))
    configs = dict(layer_configs(loaded.config))
    seed = loaded.config.train.seed
    layers = inputs.augmentation_layers(loaded.config.augmentation, seed=seed)
    assert [layer.seed for layer in layers] == [seed + i for i in range(len(MINIMAL))]
    assert configs["RandomFlip"]["mode"] == "horizontal_and_vertical"
    for name in ("RandomRotation", "RandomZoom", "RandomTranslation"):
        assert configs[name]["fill_mode"] == "reflect"
    assert configs["RandomZoom"]["height_factor"] == configs["RandomZoom"]["width_factor"] == 0.2
    for name in ("RandomContrast", "RandomBrightness"):  # they work on 0..255
        assert list(configs[name]["value_range"]) == [0, 255]
    assert configs["RandomPadCrop"] == {**configs["RandomPadCrop"], "height": 32, "width": 32,
                                        "fill_mode": "constant"}


# --------------------------------------------------------------------------- JSON schema, reference
@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = schema_lib.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def json_errors(validator, *items) -> list:
    data = {"model": {"input_shape": [28, 28, 1]}, "augmentation": {"layers": list(items)}}
    return list(validator.iter_errors(data))


def test_the_json_schema_takes_each_type_with_its_keys(validator):
    assert json_errors(validator, *({"type": tag, **FULL[tag]} for tag in FULL)) == []


@pytest.mark.parametrize("tag, key, value, takes", FOREIGN)
def test_the_json_schema_rejects_a_key_of_another_type(validator, tag, key, value, takes):
    assert json_errors(validator, {"type": tag, **MINIMAL[tag]}) == []
    assert json_errors(validator, {"type": tag, **MINIMAL[tag], key: value})


def test_the_json_schema_rejects_factor_on_random_flip(validator):
    assert json_errors(validator, {"type": "random_flip", "mode": "vertical"}) == []
    assert json_errors(validator, {"type": "random_flip", "factor": 0.1})


def test_the_json_schema_rejects_an_unknown_type(validator):
    assert json_errors(validator, {"type": "random_flp"})
    assert json_errors(validator, {"type": "random_crop", "height": 40, "width": 40, "fill_mode": "wrap"})


# --------------------------------------------------------------------------- `optimizer: NAME`
def test_optimizer_short_form(write_yaml, small_model_yaml):
    cfg = config_lib.load(write_yaml(small_model_yaml + "optimizer: sgd\n")).config
    assert cfg.optimizer == schema_lib.OptimizerConfig(name="sgd")
    assert cfg.optimizer.learning_rate == 0.001
    cfg = config_lib.load(write_yaml(small_model_yaml), ["optimizer=rmsprop"]).config
    assert cfg.optimizer.name == "rmsprop"


def test_augmentation_config_errors_name_the_field(write_yaml):
    """They are config errors, found when the file is read (FILE:LINE: path: message)."""
    def config(*layers):
        return write_yaml("model: {input_shape: [8, 8, 1]}\naugmentation:\n  layers:\n"
                          + "".join(f"    - {layer}\n" for layer in layers))

    path = config("{type: random_flip}", "{type: random_rotation}")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:5: "
                                          r"augmentation.layers\[1\].factor: random_rotation needs `factor`$"):
        config_lib.load(path)
    with pytest.raises(ConfigError, match=r"augmentation.layers\[0\].width: random_crop needs `width`"):
        config_lib.load(config("{type: random_crop, height: 40}"))
    with pytest.raises(ConfigError, match=r"augmentation.layers\[0\].height_factor: random_translation "
                                          r"needs `height_factor` or `factor`"):
        config_lib.load(config("{type: random_translation, width_factor: 0.1}"))
    with pytest.raises(ConfigError,
                       match=r"augmentation.layers\[0\].factor: random_flip does not use `factor`"):
        config_lib.load(config("{type: random_flip, factor: 0.2}"))
    with pytest.raises(ConfigError, match=r"augmentation.layers\[0\].fill_mode: random_crop pads with"):
        config_lib.load(config("{type: random_crop, height: 40, width: 40, fill_mode: wrap}"))
