"""The one exception type of the benchmark that is meant for the user, not for a traceback."""

from __future__ import annotations


class BenchError(Exception):
    """A bad setting, a missing file or model, a conflicting store: ``sdi-bench`` prints the message and
    exits with status 2. The message names the setting and its value and says what to do."""
