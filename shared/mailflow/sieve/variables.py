"""Sieve variables (RFC 5229): `${name}` and `${0}`..`${9}` expanded in a string, and set's modifiers.

Pure. Bounded: a value is cut at MAX_VALUE characters and a script holds at most MAX_VARIABLES
variables (`Variables.set` raises VariableError past it); an expanded string longer than MAX_EXPANDED
raises VariableError (the script fails and the message is kept). Expansion is one left-to-right pass,
never recursive (§3: a value's own "${...}" is text). A reference that is not an identifier or a number
("${a.b}", "${", "${ x}") is left as it is; an unknown variable is "" (§3).
"""

from __future__ import annotations

MAX_VARIABLES = 128
MAX_VALUE = 4096  # RFC 5229 §6: implementations may limit a value; at least 4000 octets are kept
MAX_EXPANDED = 64 * 1024
_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_REST = _FIRST | frozenset("0123456789")


class VariableError(ValueError):
    pass


def _name(text: str) -> bool:
    return bool(text) and text[0] in _FIRST and all(c in _REST for c in text)


class Variables:
    def __init__(self):
        self.values: dict[str, str] = {}
        self.matched: list[str] = []  # ${0}.. of the last :matches that succeeded

    def set(self, name: str, value: str) -> None:
        if name not in self.values and len(self.values) >= MAX_VARIABLES:
            raise VariableError(f"more than {MAX_VARIABLES} variables")
        self.values[name] = value[:MAX_VALUE]

    def expand(self, text: str) -> str:
        if "${" not in text:
            return text
        out: list[str] = []
        size, i = 0, 0
        while True:
            j = text.find("${", i)
            k = text.find("}", j + 2) if j >= 0 else -1
            if k < 0:
                out.append(text[i:])
                break
            name = text[j + 2 : k]
            if name.isdigit() and len(name) <= 3:
                n = int(name)
                value = self.matched[n] if n < len(self.matched) else ""
            elif _name(name):
                value = self.values.get(name.lower(), "")
            else:  # not a reference: "${" stays text, and the scan goes on after it
                out.append(text[i : j + 2])
                i = j + 2
                continue
            out += (text[i:j], value)
            size += (j - i) + len(value)
            if size > MAX_EXPANDED:
                raise VariableError(f"a string longer than {MAX_EXPANDED} characters once expanded")
            i = k + 1
        return "".join(out)


def modify(value: str, modifiers: tuple[str, ...]) -> str:
    """set's modifiers, already in their order of precedence (RFC 5229 §4)."""
    for m in modifiers:
        if m == "lower":
            value = value.lower()
        elif m == "upper":
            value = value.upper()
        elif m == "lowerfirst":
            value = value[:1].lower() + value[1:]
        elif m == "upperfirst":
            value = value[:1].upper() + value[1:]
        elif m == "quotewildcard":
            value = value.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
        elif m == "length":
            value = str(len(value))
    return value
