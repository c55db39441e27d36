"""What every ``usssl`` sub-command shares: the help format (each option's default shown), ``-v`` accepted
before or after the sub-command, ``--version``, and the ingest defaults named in the help (kept equal to
``usssl.config.IngestConfig`` by a test, so that building the parser imports no pydantic schema)."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version

INGEST_DEFAULTS = {"size": (64, 64), "fps": 15.0, "workers": 2}
"""``IngestConfig``'s defaults for ``usssl ingest --size/--fps/--workers`` (tests/test_cli.py checks them)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions and epilogs kept as written; ``(default: X)`` after every option that has a default
    its help does not already name (flags and unset options have none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or not shows_default(action)
                or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))):
            return text
        return f"{text} (default: %(default)s)"


def shows_default(action: argparse.Action) -> bool:
    """Whether ``action`` has a default worth showing (not None, not a flag's False, not an empty list;
    0 is one)."""
    return not (action.default is None or action.default is False or action.default is argparse.SUPPRESS
                or action.default == [])


def usssl_version() -> str:
    try:
        return version("usssl")
    except PackageNotFoundError:
        return "unknown (not installed)"


def add_common(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``-v/--verbose`` (on a sub-command its default is left unset, so ``usssl -v run`` and
    ``usssl run … -v`` both work) and, on the top parser, ``--version``."""
    parser.add_argument("-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="debug logging (before or after the sub-command)")
    if top:
        parser.add_argument("--version", action="version", version=f"usssl {usssl_version()}",
                            help="print the version and exit")


def finish(parser: argparse.ArgumentParser, subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Give every sub-command the shared options and the help format."""
    parser.formatter_class = HelpFormatter
    for sub in subparsers.choices.values():
        sub.formatter_class = HelpFormatter
        if not any("--verbose" in a.option_strings for a in sub._actions):
            add_common(sub)
    return parser
