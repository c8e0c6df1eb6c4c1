"""Prefect flows: thin sequences of library calls (see ``bootstrap``)."""
