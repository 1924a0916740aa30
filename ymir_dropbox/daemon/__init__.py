"""The daemon, split by job:

- :mod:`.process`: the lock, signals, systemd notify, re-execution; wires the rest;
- :mod:`.scheduler`: the loop, the worker pool, an orderly stop;
- :mod:`.inbox`: events and rescans become candidates for the readiness tracker;
- :mod:`.worker`: what a worker does with one package (claim, import, file);
- :mod:`.claiming`: the rename from the inbox into processing/;
- :mod:`.filing`: the rename into done/ or failed/ under a free name, with error files;
- :mod:`.policy`: retries, backoff and the crash limit (pure);
- :mod:`.recovery`: what a start does with what the last run left.
"""

from ymir_dropbox.daemon.process import run_daemon

__all__ = ["run_daemon"]
