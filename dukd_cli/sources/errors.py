"""The one error of :mod:`dukd_cli.sources`."""

from dukd_cli.errors import WeightsError


class SourceError(WeightsError):
    """A source that cannot be parsed, reached, downloaded or that fails its hash check."""
