"""dukd: compress image super-resolution networks by Data Upcycling Knowledge Distillation.

The command-line tool (``dukd``) is a thin shell over this package's Python API.
"""

__version__ = "0.1.0"

from dukd_cli.errors import DukdError  # noqa: E402

__all__ = ["DukdError", "__version__"]
