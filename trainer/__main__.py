"""`python -m trainer`: the `vertex-trainer` command."""

from trainer.commands import cli

cli()
