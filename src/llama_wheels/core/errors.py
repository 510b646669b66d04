"""The errors llama-wheels reports to people.

Every message is one line: what failed, the likely cause, and what to do next.
Only ``cli.main`` turns them into exit codes; nothing else calls ``sys.exit``.
"""

from __future__ import annotations


class LlamaWheelsError(Exception):
    """Base class. ``exit_code`` 1: the work itself failed."""

    exit_code = 1


class UserError(LlamaWheelsError):
    """Bad input the user can fix (exit code 2)."""

    exit_code = 2


class ConfigError(UserError):
    """build_config/ is malformed or names something that does not exist."""


class ChecksumError(UserError):
    """A download does not have the sha256 the pin records."""


class PatchError(UserError):
    """A patch of the pin's series does not apply to the pinned source."""


class ToolchainError(UserError):
    """A required tool is missing or unusable."""


class CommandFailed(LlamaWheelsError):
    """A subprocess failed. The message names the telling line; ``tail`` holds the last output lines."""

    def __init__(self, message: str, tail: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.tail = tail


class CommandTimedOut(CommandFailed):
    """A command outlived its time limit and was stopped (with everything it started)."""


class BuildError(LlamaWheelsError):
    """Building a wheel failed."""


class RepairError(LlamaWheelsError):
    """A wheel failed manylinux repair or the post-repair checks."""


class VerifyError(LlamaWheelsError):
    """A wheel does not behave as its target promises."""


class Interrupted(LlamaWheelsError):
    """The user pressed Ctrl-C (exit code 130)."""

    exit_code = 130
