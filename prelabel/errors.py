"""prelabel's own errors: one base, and the kind the command line reports as the user's to fix.

Why a module of its own: the subsystems raise errors that cross package boundaries (a labeling
config error surfaces in the backend's ``/setup``, in ``prelabel predict`` and in the export), and
the command line needs one rule for all of them. ``UserError`` means "the input is wrong" (a
config, a file, an option, a missing setting): every ``prelabel`` command prints it as one red line
and exits with code 2 (``prelabel.cli``). Anything else is a bug or an outage and keeps its
traceback. Each subclass also keeps the builtin base it always had (``ValueError``,
``RuntimeError``, ``LookupError``), so existing ``except ValueError`` handlers still see it.
"""

from __future__ import annotations

USER_ERROR_EXIT = 2  # the exit code of a command stopped by a UserError


class PrelabelError(Exception):
    """Base of every error prelabel raises on purpose."""


class UserError(PrelabelError):
    """Input the user can fix (config, data file, option, setting): one line, exit code 2.

    A subclass may name another ``exit_code`` (``prelabel up``: a child process died -> 1).
    """

    exit_code: int = USER_ERROR_EXIT


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used: a labeling config with nothing to pre-annotate, or a
    training/flywheel YAML that cannot be run (raised before any model is loaded)."""
