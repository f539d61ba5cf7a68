"""``python -m magphase.cli`` (and ``torchrun -m magphase.cli``) entry point."""

from magphase.cli import main

main()
