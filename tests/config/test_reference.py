"""README.md's config reference is the one generated from the schema."""

from pathlib import Path

from cnnctl.config import schema as schema_lib
from cnnctl.config import reference
from cnnctl.config.layer_specs import LAYER_SPECS

README = Path(__file__).resolve().parents[1] / "README.md"


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
