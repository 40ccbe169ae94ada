"""How the library speaks to the person using it, in a form each front end can put in its own words.

Errors and warnings name a parameter as Python spells it, in backticks ("`max_side` must be a positive number of
pixels"): from Python that is the keyword to change; the CLI turns each name into its flag (`in_flags`: "--max-side
must be ..."). Warnings are `ShardflowWarning`s, which the CLI prints as "warning: ..."; progress lines go to the
`shardflow` logger (`logging.getLogger(__name__)` in each module), which the CLI prints as they are.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Mapping

INTERRUPTED = 130  # a command's exit status when Ctrl-C stopped it, as the shell's (128 + SIGINT)
_PARAMETER = re.compile(r"`([A-Za-z_]\w*)`")


class ShardflowWarning(UserWarning):
    """A choice that works, but probably not as meant."""


def in_flags(message: str, flags: Mapping[str, str]) -> str:
    """`message` with each backticked parameter name that `flags` maps (name -> flag) replaced by its flag."""
    return _PARAMETER.sub(lambda match: flags.get(match.group(1), match.group(0)), message)


def did_you_mean(unknown: Iterable[str], options: Iterable[str]) -> str:
    """`; did you mean --max-side?` for the first of the `unknown` options close to one of `options`, else ""."""
    options = list(options)
    for option in unknown:
        close = difflib.get_close_matches(option.split("=", 1)[0].replace("_", "-"), options, n=1, cutoff=0.75)
        if close:
            return f"; did you mean {close[0]}?"
    return ""


def display_width(text: str) -> int:
    """Columns `text` takes on a terminal: 2 for each wide or full-width character (CJK: 風景 is 4), 0 for
    combining marks, 1 for the others."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def pad(text: str, width: int, align: str = "<") -> str:
    """`text` padded with spaces to `width` terminal columns (`display_width`), on the right ("<") or left (">"):
    what `f"{text:<{width}}"` does for text of one column per character."""
    fill = " " * max(0, width - display_width(text))
    return text + fill if align == "<" else fill + text
