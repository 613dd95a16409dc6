import sys, time, tempfile
from pathlib import Path
sys.path.insert(0, "services/imap-pop3/tests")
from imaptest import Running, settings_for, Raw, make_message
from mailflow.store.api import DeliverItem
from tests.support.store import LocalStore

with LocalStore.running() as local, tempfile.TemporaryDirectory() as tmp:
    st = local.fresh(); st.add_user("alice@example.test", "alice-pw")
    srv = Running(settings_for(Path(tmp)), st)
    raw = make_message("x")
    have = 0
    for n in (1000, 10000, 50000):
        for b in range(have, n, 1000):
            items = [DeliverItem(key=f"k{b+i}", recipient="alice@example.test", body=raw, flags=(("\\Seen",) if (b+i) % 3 else ())) for i in range(1000)]
            srv.call(st.deliver(items), timeout=120)
        have = n
        c = Raw("127.0.0.1", srv.port("imap")); c.line(); c.cmd("a0", "LOGIN alice@example.test alice-pw"); c.cmd("a1", "SELECT INBOX")
        for label, crit in (("noop ", None), ("view ", "UNSEEN"), ("store", "UNSEEN SMALLER 100000000"), ("view ", "UID 1:100 UNSEEN"), ("store", "UID 1:100 UNSEEN SMALLER 100000000")):
            cmd = "NOOP" if crit is None else f"UID SEARCH {crit}"
            for _ in range(3): c.cmd("w", cmd)
            t = time.perf_counter(); R = 20
            for _ in range(R): c.cmd("t", cmd)
            print(f"{n:6d} msgs {label} {cmd}: {(time.perf_counter()-t)/R*1000:.2f} ms", flush=True)
        c.close()
    srv.stop()
