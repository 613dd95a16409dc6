"""The SMTP command handlers, one module per family (the table that names them is session.COMMANDS).

Each handler is `async def cmd_x(s: Session, arg: str) -> None`: it runs only in the states its
table entry allows, answers with `s.reply(...)` (constants of replies.py), moves `s.state` on, and
leaves policy to the handler class (handler.py). A PermFailure it raises is answered as it is;
anything else becomes a reply in replies.to_reply.
"""
