"""The config file: its schema, YAML source with line numbers, overrides, error wording and reference."""
