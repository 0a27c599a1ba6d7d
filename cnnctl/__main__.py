"""`python -m cnnctl` is `cnnctl`."""

from cnnctl.cli import app

app(prog_name="cnnctl")
