"""`vertex-trainer deploy` under its old path (after `pip install .`)."""

from trainer.commands import run_command

run_command("deploy")
