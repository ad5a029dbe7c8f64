"""Subcommands of the ``erf`` command line, one module per group.

Each module registers its subcommands with :func:`erf.commands._base.command`; the CLI
imports every module of this package. Only these modules (and :mod:`erf.cli`)
turn library errors into messages.
"""
