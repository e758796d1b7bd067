"""The one error of :mod:`dukd_cli.sources`."""

from dukd_cli.errors import WeightsError


class SourceError(WeightsError):
    """A source that cannot be parsed, reached, downloaded or that fails its hash check.

    ``unreachable``: the file is not cached and the network cannot be used (no connection, or
    ``HF_HUB_OFFLINE``). The message then says only that; the caller, which knows what a local copy
    would be passed as (an option, an argument), adds how to give one."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable
