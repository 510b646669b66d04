"""The errors llama-wheels reports to people.

Every message is one line: what failed, the likely cause, and what to do next.
Only ``cli.main`` turns them into exit codes; nothing else calls ``sys.exit``.
"""

from __future__ import annotations

# What one error line may take beside the paths it names: what is wrong and the fix fit, a runaway message (raw
# bytes of a corrupt archive, a tool's whole output) does not. The printed line, paths and all, is cut at
# PRINTED_LIMIT.
LINE_LIMIT = 300
PRINTED_LIMIT = 1000


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


def one_line(text: str, limit: int = PRINTED_LIMIT) -> str:
    """``text`` as one line of printable characters, at most ``limit`` long: whitespace runs become one space,
    other unprintable characters their escape; a longer text keeps its start (the culprit) and its end (the
    fix) around an ellipsis."""
    flat = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in " ".join(text.split()))
    if len(flat) <= limit:
        return flat
    head = (limit - 5) * 2 // 3
    return f"{flat[:head]} ... {flat[len(flat) - (limit - 5 - head):]}"
