"""dukd: compress image super-resolution networks by Data Upcycling Knowledge Distillation.

The command-line tool (``dukd``) is a thin shell over this package's Python API.
"""

__version__ = "0.1.0"

from dukd_cli.errors import DukdError
from dukd_cli.runtime.threads import configure_environment as _configure_environment

# Before torch loads (every dukd module imports torch after this package): OpenMP threads that
# wait yield their core instead of spinning (see dukd_cli.runtime.threads). A user's own setting is kept.
_configure_environment()

__all__ = ["DukdError", "__version__"]
