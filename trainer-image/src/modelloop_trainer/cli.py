"""What the two commands share: flags with environment fallbacks, exit codes, summaries.

Every flag `--some-flag` can also be set by `MODELLOOP_SOME_FLAG` (the flag wins), so the
operator can pass settings either way. `run_command` turns our typed errors into the exit
codes of docs/contracts.md and always tries to leave a termination message, also when
failing: an operator with a reason beats one with only an exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from modelloop_trainer.errors import EXIT_FAILURE, EXIT_OK, InputError, ModelloopError
from modelloop_trainer.termination import default_termination_path, write_termination_message

ENV_PREFIX = "MODELLOOP_"


class ArgumentParser(argparse.ArgumentParser):
    """Raises InputError instead of printing usage and exiting, so errors get a summary too."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{self.prog}: {message}")


def env_var(dest: str) -> str:
    return ENV_PREFIX + dest.upper()


def apply_env_defaults(parser: argparse.ArgumentParser) -> None:
    """Defaults from MODELLOOP_<DEST>; argparse converts string defaults with the flag's type."""
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help",):
            continue
        value = os.environ.get(env_var(action.dest))
        if value is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            action.default = value.strip().lower() in ("1", "true", "yes", "on")
        else:
            action.default = value
            action.required = False


def add_termination_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--termination-log",
        default=None,
        help=f"where to write the JSON summary (default {'/dev/termination-log'} when writable)",
    )


def run_command(
    kind: str,
    parser: argparse.ArgumentParser,
    command: Callable[[argparse.Namespace], dict[str, Any]],
    argv: Sequence[str] | None,
    *,
    writes_summary: Callable[[], bool] = lambda: True,
) -> int:
    """Parse flags, run `command`, write the summary and map errors to exit codes.

    `command` returns the success summary; errors may carry a partial summary (for example
    the metrics of a model that missed its gate) in `ModelloopError.summary`.
    """
    apply_env_defaults(parser)
    # Known before the full parse, so that a flag error is reported there too.
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--termination-log", default=os.environ.get(env_var("termination_log")))
    termination_path = early.parse_known_args(argv)[0].termination_log or (
        default_termination_path()
    )
    try:
        args = parser.parse_args(argv)
        summary = command(args)
        code, status = EXIT_OK, "Succeeded"
        message = str(summary.pop("message", f"{kind} succeeded"))
    except ModelloopError as exc:
        code, status, message = exc.exit_code, "Failed", str(exc)
        summary = dict(exc.summary)
        print(f"error: {message}", file=sys.stderr, flush=True)
    except Exception as exc:  # anything unexpected: exit 1 with its type in the message
        traceback.print_exc()
        code, status, message = EXIT_FAILURE, "Failed", f"{type(exc).__name__}: {exc}"
        summary = {}
    if writes_summary():
        full = {"v": 1, "kind": kind, "status": status, "exitCode": code, "message": message}
        # The error's message wins over any message in a partial summary.
        full.update({k: v for k, v in summary.items() if k != "message"})
        try:
            write_termination_message(termination_path, full)
        except OSError as exc:
            print(f"warning: cannot write termination message: {exc}", file=sys.stderr)
    return code
