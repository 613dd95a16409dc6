"""What sievelib's grammar lacks or gets wrong for us, registered through its own `add_commands` (which
puts a class in its command table by name, replacing one of the same name). Imported by script.py
before anything is parsed; nothing else here.

- the comparator argument also takes "i;ascii-numeric" (RFC 4790 §9.1, with relational, RFC 5231);
  script.py refuses it unless `require "comparator-i;ascii-numeric"`;
- address and envelope take :user and :detail (RFC 5233, extension "subaddress");
- imap4flags' actions and `hasflag` take one flag list; sievelib's also take a variable name first
  and then file a lone argument as that name, or drop the name of `hasflag "v" "x"`;
- `mailboxexists` (RFC 5490 §3.1), `string` (RFC 5229 §5), and `set` with its modifiers (RFC 5229 §4:
  sievelib's takes none);
- date and currentdate (RFC 5260) with the comparator above;
- include and return (RFC 6609) and ereject (RFC 5429), which sievelib does not know; vacation needs
  its `require` (sievelib's does not).
"""

from __future__ import annotations

from sievelib import commands as sc
from sievelib import parser as sp

# RFC 5228 §2.4.2 multi-line strings. sievelib's lexer rule is `text:[^$]*?[\r\n]+\.$`: its `[^$]` makes
# a text: string that holds a "$" unknown ("costs $5" in a vacation reply), and it backtracks over runs
# of line breaks. This one reads the text line by line (a line cannot run past its own end, so the lazy
# repeat tries "." once per line: linear) up to a line that is "." alone.
MULTILINE = rb"text:[ \t]*(?:#[^\r\n]*)?\r?\n(?:[^\r\n]*\r?\n)*?\.\r?$"
sp.Parser.lrules = [(name, MULTILINE if name == b"multiline" else rule) for name, rule in sp.Parser.lrules]

COMPARATOR = {
    **sc.comparator,
    "extra_arg": {"type": "string", "values": ['"i;octet"', '"i;ascii-casemap"', '"i;ascii-numeric"']},
}
STRINGS = ["string", "stringlist"]
KEYS = {"name": "key-list", "type": STRINGS, "required": True}
FLAGS = {"name": "list-of-flags", "type": STRINGS, "required": True}
ADDRESS_PART = {**sc.address_part, "extension_values": {":user": "subaddress", ":detail": "subaddress"}}
ADDRESS_ARGS = [COMPARATOR, ADDRESS_PART, sc.match_type, {"name": "header-list", "type": STRINGS, "required": True}, KEYS]
MODIFIERS = (":lower", ":upper", ":lowerfirst", ":upperfirst", ":quotewildcard", ":length")


class HeaderCommand(sc.TestCommand):
    args_definition = [COMPARATOR, sc.match_type, {"name": "header-names", "type": STRINGS, "required": True}, KEYS]


class AddressCommand(sc.TestCommand):
    args_definition = ADDRESS_ARGS


class EnvelopeCommand(sc.TestCommand):
    args_definition = ADDRESS_ARGS
    extension = "envelope"


class BodyCommand(sc.TestCommand):
    args_definition = [COMPARATOR, sc.match_type, *sc.BodyCommand.args_definition[2:]]
    extension = "body"


class SetflagCommand(sc.ActionCommand):
    args_definition = [FLAGS]
    extension = "imap4flags"


class AddflagCommand(SetflagCommand):
    pass


class RemoveflagCommand(SetflagCommand):
    pass


class HasflagCommand(sc.TestCommand):
    args_definition = [COMPARATOR, sc.match_type, FLAGS]
    extension = "imap4flags"


class MailboxexistsCommand(sc.TestCommand):
    args_definition = [{"name": "mailbox-names", "type": STRINGS, "required": True}]
    extension = "mailbox"


class StringCommand(sc.TestCommand):
    args_definition = [COMPARATOR, sc.match_type, {"name": "source", "type": STRINGS, "required": True}, KEYS]
    extension = "variables"


class SetCommand(sc.ControlCommand):
    args_definition = [
        *({"name": m[1:], "type": ["tag"], "values": [m], "required": False} for m in MODIFIERS),
        {"name": "name", "type": ["string"], "required": True},
        {"name": "value", "type": ["string"], "required": True},
    ]
    extension = "variables"


class DateCommand(sc.TestCommand):
    args_definition = [
        sc.DateCommand.args_definition[0],
        COMPARATOR,
        sc.match_type,
        {"name": "header-name", "type": ["string"], "required": True},
        {"name": "date-part", "type": ["string"], "required": True},
        KEYS,
    ]
    extension = "date"


class CurrentdateCommand(sc.TestCommand):
    args_definition = [
        sc.CurrentdateCommand.args_definition[0],
        COMPARATOR,
        sc.match_type,
        {"name": "date-part", "type": ["string"], "required": True},
        KEYS,
    ]
    extension = "date"


class IncludeCommand(sc.ControlCommand):
    args_definition = [
        {"name": "location", "type": ["tag"], "values": [":personal", ":global"], "required": False},
        {"name": "once", "type": ["tag"], "values": [":once"], "required": False},
        {"name": "optional", "type": ["tag"], "values": [":optional"], "required": False},
        {"name": "script-name", "type": ["string"], "required": True},
    ]
    extension = "include"


class ErejectCommand(sc.ActionCommand):
    args_definition = [{"name": "text", "type": ["string"], "required": True}]
    extension = "ereject"


class VacationCommand(sc.ActionCommand):
    args_definition = sc.VacationCommand.args_definition
    extension = "vacation"  # sievelib's runs without its require


class ReturnCommand(sc.ControlCommand):
    args_definition = []
    extension = "include"


sc.add_commands([
    HeaderCommand, AddressCommand, EnvelopeCommand, BodyCommand, SetflagCommand, AddflagCommand,
    RemoveflagCommand, HasflagCommand, MailboxexistsCommand, StringCommand, SetCommand, DateCommand,
    CurrentdateCommand, IncludeCommand, ReturnCommand, ErejectCommand, VacationCommand,
])  # fmt: skip
