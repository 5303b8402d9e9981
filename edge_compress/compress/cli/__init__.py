"""The `compress` command line (main.py), its options generated from the configs (options.py), and its own
commands (commands.py)."""
from .main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
