"""`python -m cnnctl` is `cnnctl`."""

from cnnctl.cli import run

run()
