"""README.md's config reference is the one generated from the schema."""

from pathlib import Path

from cnnctl.config import schema as schema_lib
from cnnctl.config import reference
from cnnctl.config.layer_specs import LAYER_SPECS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_matches_schema():
    text = README.read_text()
    start, end = text.index(reference.BEGIN), text.index(reference.END) + len(reference.END)
    assert text[start:end] == reference.markdown(), (
        "README.md's config reference is stale: regenerate it with `python -m cnnctl.config.reference`")


def test_reference_covers_every_section_key_and_layer_type():
    md = reference.markdown()
    for section in ("model", "data", "augmentation", "optimizer", "loss", "train", "run"):
        assert f"#### `{section}`" in md
    for key in schema_lib.TrainConfig.model_fields:
        assert f"| `{key}` |" in md
    for tag in LAYER_SPECS:
        assert f"| `{tag}` |" in md


def test_the_reference_lists_every_type_and_its_keys():
    md = reference.markdown()
    assert "#### `augmentation.layers[i]`: augmentation types" in md
    section = md.split("#### `augmentation.layers[i]`: augmentation types")[1].split("####")[0]
    for tag, cls in schema_lib.AUGMENT_SPECS.items():
        assert f"| `{tag}` |" in section
        rows = section.split(f"| `{tag}` |")[1].split("\n| `")[0]
        for key in set(cls.model_fields) - {"type"}:
            assert f" `{key}` |" in rows, (tag, key)
    assert "random_flip does not use" not in md
    assert "**needed** (or `factor`)" in section
