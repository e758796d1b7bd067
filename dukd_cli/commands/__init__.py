"""CLI commands: one module per command group, each a thin shell over the Python API."""
