"""How deeply a JSON text nests, found without parsing it.

``json.loads`` recurses once per ``[`` or ``{``: 200 KB of ``[`` ends in a
``RecursionError`` (a bare 500). A body whose brackets number no more than the limit
cannot nest deeper than it, which two C-level counts settle for almost every body; the
rest are scanned, strings skipped, and stop at the first level past the limit.
"""

from __future__ import annotations

import re

# A string (escapes included) or one bracket: strings are matched whole so that brackets
# inside them do not count.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


def too_deep(text: bytes, limit: int) -> bool:
    """Whether ``text`` opens more than ``limit`` arrays or objects inside each other."""
    if text.count(b"[") + text.count(b"{") <= limit:
        return False
    depth = 0
    for match in _TOKENS.finditer(text):
        char = match.group()[0]
        if char == 0x5B or char == 0x7B:  # [ {
            depth += 1
            if depth > limit:
                return True
        elif char == 0x5D or char == 0x7D:  # ] }
            depth -= 1
    return False
