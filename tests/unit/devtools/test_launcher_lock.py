"""The launcher's directory lock, as another command sees it (``restore`` asks whether a
``make run`` holds ``.dev/`` before it touches anything). One process: flock's locks
belong to open files, so a second open of the lock file sees the first one's lock."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from service.devtools.launcher import hold_lock, running_pid


def test_running_pid_names_the_holder_and_only_while_it_holds(tmp_path: Path) -> None:
    assert running_pid(tmp_path) is None  # no lock file: never ran here
    with ExitStack() as stack:
        hold_lock(tmp_path, stack)
        assert running_pid(tmp_path) == str(os.getpid())
    assert running_pid(tmp_path) is None  # stopped: the file stays, the lock is gone
    assert (tmp_path / "run.lock").is_file()
