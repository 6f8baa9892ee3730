"""Where the CLI's text meets the terminal: every string is escaped here, once.

Profile values, GGUF names, file names and error messages may carry terminal escape sequences
or other control characters; :class:`SafeConsole` shows them as visible escapes
(orchestrator.textsafe) wherever rich renders a string: ``print``, table cells and titles.
``print_json`` escapes everything outside ASCII.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from orchestrator.textsafe import escape_controls


class SafeConsole(Console):
    """A rich Console that never writes a control character it was given."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        """Escape control characters, then let rich render (markup, if asked, still works)."""
        return super().render_str(escape_controls(text), **kwargs)

    def print_json(self, json: str | None = None, **kwargs: Any) -> None:
        """JSON with every non-ASCII character escaped (control characters included)."""
        kwargs["ensure_ascii"] = True
        super().print_json(json, **kwargs)


def make_console(*, stderr: bool = False) -> SafeConsole:
    """The console for stdout (or stderr): no highlighting, long lines kept whole."""
    return SafeConsole(stderr=stderr, highlight=False, soft_wrap=True)
