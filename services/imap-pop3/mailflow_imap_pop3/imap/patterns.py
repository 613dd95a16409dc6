"""LIST/LSUB mailbox patterns (RFC 3501 §6.3.8): `*` matches any text, `%` any text without the
hierarchy delimiter. Never a regular expression: a pattern from the client is matched by a hand-written
automaton whose cost is bounded by len(name) x len(pattern) / 64 word operations, whatever the input.

A regular expression built from "*a*a*a...b" backtracks exponentially (14 wildcards against one name
took a minute). Here runs of wildcards collapse to one (`%*` is `*`), the literal text before the first
and after the last wildcard is compared directly, and the rest runs as a bit-parallel NFA (shift-and):
bit i of the state says "the first i tokens matched what was read so far". Nothing raises.
"""

from __future__ import annotations

from mailflow.store.api import DELIMITER

_STAR, _PCT = "*", "%"


class MailboxPattern:
    __slots__ = ("text", "head", "tail", "literals", "middle", "lit", "star", "wild", "accept")

    def __init__(self, pattern: str):
        self.text = pattern
        tokens: list[str] = []  # literal characters, and _STAR / _PCT for collapsed runs of wildcards
        wild: list[bool] = []
        for ch in pattern:
            if ch in "*%":
                if wild and wild[-1]:
                    tokens[-1] = _STAR if ch == "*" else tokens[-1]  # "%*", "*%", "**": *; "%%": %
                else:
                    tokens.append(ch)
                    wild.append(True)
            else:
                tokens.append(ch)
                wild.append(False)
        first = wild.index(True) if True in wild else len(tokens)
        last = len(tokens) - 1 - wild[::-1].index(True) if True in wild else len(tokens)
        self.head = "".join(tokens[:first])
        self.tail = "".join(tokens[last + 1 :])
        self.literals = wild.count(False)  # a name shorter than this cannot match
        self.middle = tokens[first : last + 1]  # from the first wildcard to the last; [] if none
        self.lit: dict[str, int] = {}  # character -> bits of the literal tokens that are that character
        self.star = self.wild = 0
        for i, t in enumerate(self.middle):
            if not wild[first + i]:
                self.lit[t] = self.lit.get(t, 0) | 1 << i
            else:
                self.wild |= 1 << i
                if t == _STAR:
                    self.star |= 1 << i
        self.accept = 1 << len(self.middle)

    def matches(self, name: str) -> bool:
        if not self.middle:
            return name == self.text
        if len(name) < self.literals or not (name.startswith(self.head) and name.endswith(self.tail)):
            return False
        mid = name[len(self.head) : len(name) - len(self.tail)]
        if len(self.middle) == 1:
            return self.middle[0] == _STAR or DELIMITER not in mid
        lit, star, wild = self.lit, self.star, self.wild
        state = 1 | (1 & wild) << 1  # nothing read; a wildcard may match the empty text
        for ch in mid:
            state = (state & lit.get(ch, 0)) << 1 | state & (star if ch == DELIMITER else wild)
            state |= (state & wild) << 1  # runs were collapsed: one step reaches past any wildcard
            if not state:
                return False
        return bool(state & self.accept)
