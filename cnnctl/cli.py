"""The `cnnctl` command line: parses arguments and hands each command to its stage module."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cnnctl.errors import CnnctlError

app = typer.Typer(
    help="Train convolutional image classifiers from a YAML config.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigArg = Annotated[Path, typer.Argument(help="A cnnctl YAML config file.", show_default=False)]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a config value: path.to.key=value (repeatable).", show_default=False)]


def user_errors(command):
    """Print a CnnctlError as clear lines on stderr and exit 2; bugs keep their traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CnnctlError as e:
            print(f"{e}", file=sys.stderr)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@user_errors
def check(
    config: ConfigArg,
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Validate a config and build its model without data: per-layer shapes, params, FLOPs."""
    from cnnctl import config as config_lib
    from cnnctl import summary

    info = summary.describe(config_lib.load(config, set_))
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print(summary.format_table(info))


@app.command()
def schema() -> None:
    """Print the JSON Schema of config files (for editors: yaml-language-server)."""
    from cnnctl import config as config_lib

    print(json.dumps(config_lib.json_schema(), indent=2))


@app.callback(invoke_without_command=True)
def main(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        from cnnctl import __version__

        print(f"cnnctl {__version__}")
        raise typer.Exit(0)


if __name__ == "__main__":
    app()
