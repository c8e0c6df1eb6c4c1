"""The ``bootstrap`` command: a Typer app over the library and the flows (``cli.main``).

It parses, calls the library or runs a flow, and prints; the logic lives in ``bootstrap``.
"""
