"""bootstrap: turn raw image folders into labelled object-detection datasets.

The library: importable without Prefect and without side effects (applications call
``bootstrap.environment.apply_defaults()``). ``docs/architecture.md`` maps the modules.
"""

__version__ = "0.1.0"
