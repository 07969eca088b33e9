"""`python -m idp.cli ...`: the same as `idp ...`."""

from idp.cli import main

main(prog_name="idp")
