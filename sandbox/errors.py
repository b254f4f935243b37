"""Errors the sandbox raises."""


class SandboxError(RuntimeError):
    """The sandbox itself failed (image build, engine lost mid-run, containers that will not start)."""


class SandboxUnavailable(SandboxError):
    """No Docker engine can be reached; raised before any work starts."""
