"""Segment files keep every locator right when a write fails half-way (the disk-full fault: ENOSPC after
part of a batch went down). The failure is real: a child process under RLIMIT_FSIZE, where the kernel
writes what fits and then refuses (EFBIG), as a full disk does."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mailflow_mailbox_store.blobs import BlobFolderInUse, SegmentBlobs

CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from mailflow_mailbox_store.blobs import SegmentBlobs

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG as an error, not a signal that kills
    blobs = SegmentBlobs(sys.argv[1])
    first = blobs.append([b"a" * 600])[0]
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))  # room for 400 of the next 600 bytes
    try:
        blobs.append([b"b" * 600])
    except OSError as exc:
        print("refused", exc.errno)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space is back
    later = blobs.append([b"c" * 300, b"d" * 300])
    assert blobs.get(first) == b"a" * 600
    assert [blobs.get(x) for x in later] == [b"c" * 300, b"d" * 300], [blobs.get(x)[:8] for x in later]
    blobs.close()
    reopened = SegmentBlobs(sys.argv[1])  # a restart reads the same bodies and appends after them
    assert [reopened.get(x) for x in [first, *later]] == [b"a" * 600, b"c" * 300, b"d" * 300]
    assert reopened.get(reopened.append([b"e" * 10])[0]) == b"e" * 10
    print("ok")
    """
)


def test_a_write_cut_short_by_a_full_disk_leaves_every_locator_right(tmp_path):
    r = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["refused", "27", "ok"], r.stdout  # 27: EFBIG, after a short write


def test_a_second_store_process_on_the_same_folder_is_refused(tmp_path):
    """Segment files have one writer: a second SegmentBlobs on the folder (another process, or a replica
    given the same volume) fails at once with a clear error; once the first is closed the folder is free."""
    first = SegmentBlobs(tmp_path)
    child = subprocess.run(
        [sys.executable, "-c", "import sys; from mailflow_mailbox_store.blobs import SegmentBlobs; SegmentBlobs(sys.argv[1])", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode != 0 and "BlobFolderInUse" in child.stderr and "MAILFLOW_STORE_BLOBS=postgres" in child.stderr
    with pytest.raises(BlobFolderInUse):
        SegmentBlobs(tmp_path)  # in this process too: the lock is the open file's, not the process's
    first.close()
    SegmentBlobs(tmp_path).close()
