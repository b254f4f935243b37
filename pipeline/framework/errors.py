"""Errors the command line reports to the user as one line each, with a non-zero exit.

Anything raised as a :class:`PipelineError` is a problem with the user's input
(config, files, store) rather than a bug: the command line prints its message
without a traceback and exits with status 2.
"""


class PipelineError(Exception):
    """A problem the user can fix; its message names the file, key or row."""


class ConfigError(PipelineError):
    """The config file or a command-line override is invalid."""


class InputError(PipelineError):
    """An ``--input`` path, dataset or row cannot be used by the stage."""


class StoreError(PipelineError):
    """Something in the work directory (a part file, a manifest) is unreadable."""


class StageNotBuiltError(PipelineError):
    """A stage that is listed in the pipeline but not implemented yet was asked to run."""
