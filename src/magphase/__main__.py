"""``python -m magphase`` entry point."""

from magphase.cli import main

main()
