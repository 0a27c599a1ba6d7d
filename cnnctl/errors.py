"""The one error type that reaches the user, and how config errors are printed."""

from __future__ import annotations

import dataclasses


class CnnctlError(Exception):
    """A mistake in the user's input: printed as one clear message, exit code 2, no traceback."""

    exit_code = 2


@dataclasses.dataclass(frozen=True)
class ConfigIssue:
    """One thing wrong with a config file, located by file, line and config path."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(CnnctlError):
    """All the problems found in one config file, one line each."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = sorted(issues, key=lambda i: (i.line or 0, i.path))
        super().__init__("\n".join(str(i) for i in self.issues))


class ConfigValueError(CnnctlError):
    """A value of the config that does not work (a data path that is missing or holds no usable
    images, a split that leaves nothing): `key` is its config path (`data.train_dir`) and `detail`
    the message after it, so that a caller holding the YAML source can put the file and line in
    front (`LoadedConfig.error_at`)."""

    def __init__(self, key: str, detail: str):
        super().__init__(f"{key}: {detail}")
        self.key, self.detail = key, detail
