"""The daemon, split by job:

- :mod:`.machine`: what can happen next to a package (after a job, at start), on one screen;
- :mod:`.policy`: when (retries' backoff, the crash limit, an incomplete stream's verdict,
  judging a changed failure again), each a pure function;
- :mod:`.process`: the lock, signals, systemd notify, re-execution; wires the rest;
- :mod:`.scheduler`: the loop, the worker pool, an orderly stop;
- :mod:`.housekeeping`: what the loop does besides importing;
- :mod:`.watching`, :mod:`.readiness`, :mod:`.inbox`: events and rescans become files
  judged complete;
- :mod:`.worker`: what a worker does with one package (claim, import, file);
- :mod:`.claiming`: the rename from the inbox into processing/;
- :mod:`.filing`: the rename into done/ or failed/ under a free name, with error files;
- :mod:`.recovery`: the steps a start takes with what the last run left.
"""

from ymir_dropbox.daemon.process import run_daemon

__all__ = ["run_daemon"]
