"""The life of an attempt, written down once: its statuses, its places, the legal steps.

An attempt is one try at one package file. Its **status** says how far the import got; its
**place** says where the package file is (or went). Every step is recorded in the ledger
*before* it is taken, so after a crash the ledger and the folders alone tell what to do. The
ledger refuses any step not listed here: an illegal transition is a bug, and raises.

::

    status:  claimed --> importing --> imported | duplicate | failed
                |            \\-----> interrupted   (the machine failed, or we stopped)
                \\--> failed | interrupted

    place:   inbox --> processing --> done | failed
               |           |            failed --> retried      done --> removed
               \\--> (none) \\--> lost | replaced | (none)       failed --> removed
             none  (an import from the command line: the file is never moved)

An ``interrupted`` attempt gives up its place (None): the next attempt on the same file owns
it.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    CLAIMED = "claimed"  # the row exists; the file is about to be (or was) claimed
    IMPORTING = "importing"  # hashing, validating, storing
    IMPORTED = "imported"
    DUPLICATE = "duplicate"  # the same sha256 was imported before
    FAILED = "failed"  # the package's own fault, with its problems
    INTERRUPTED = "interrupted"  # not the package's fault; another attempt follows


class Place(StrEnum):
    INBOX = "inbox"  # still in the inbox: the claim rename is next
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    RETRIED = "retried"  # moved from failed/ back into the inbox by `retry`
    LOST = "lost"  # gone from processing/ (deleted by someone)
    REPLACED = "replaced"  # processing/ now holds another file under that name
    REMOVED = "removed"  # deleted from done/ or failed/ by the retention policy
    NONE = "none"  # `ymir-dropbox import`: the file stays where it is


IN_FLIGHT = frozenset({Status.CLAIMED, Status.IMPORTING})
FINAL = frozenset({Status.IMPORTED, Status.DUPLICATE, Status.FAILED, Status.INTERRUPTED})
SETTLED = frozenset({Status.IMPORTED, Status.DUPLICATE, Status.FAILED})

STATUS_STEPS: dict[Status, frozenset[Status]] = {
    Status.CLAIMED: frozenset({Status.IMPORTING, Status.FAILED, Status.INTERRUPTED}),
    Status.IMPORTING: frozenset(
        {Status.IMPORTED, Status.DUPLICATE, Status.FAILED, Status.INTERRUPTED}
    ),
    # After the import: a crash may have lost the folder move, but never the status.
    Status.IMPORTED: frozenset(),
    Status.DUPLICATE: frozenset(),
    Status.FAILED: frozenset(),
    Status.INTERRUPTED: frozenset(),
}

PLACE_STEPS: dict[Place | None, frozenset[Place | None]] = {
    Place.INBOX: frozenset({Place.PROCESSING, None}),
    Place.PROCESSING: frozenset({Place.DONE, Place.FAILED, Place.LOST, Place.REPLACED, None}),
    Place.DONE: frozenset({Place.REMOVED}),
    Place.FAILED: frozenset({Place.RETRIED, Place.REMOVED}),
    Place.NONE: frozenset({None}),  # an interrupted `ymir-dropbox import`
    Place.RETRIED: frozenset(),
    Place.LOST: frozenset(),
    Place.REPLACED: frozenset(),
    Place.REMOVED: frozenset(),
    None: frozenset(),
}

# Where an attempt may begin.
FIRST_PLACES = frozenset({Place.INBOX, Place.PROCESSING, Place.NONE})


class IllegalTransition(AssertionError):
    """A step the lifecycle does not allow: a bug in ymir-dropbox, never a package's fault."""


def check_status(current: str, new: Status) -> None:
    if current == new:
        return
    if new not in STATUS_STEPS[Status(current)]:
        raise IllegalTransition(f"status {current} -> {new} is not a step of the lifecycle")


def check_place(current: str | None, new: Place | None) -> None:
    if current == new:
        return
    known = Place(current) if current is not None else None
    if new not in PLACE_STEPS[known]:
        raise IllegalTransition(f"place {current} -> {new} is not a step of the lifecycle")


def destination(status: Status) -> Place:
    """The folder a package with this final status is filed in."""
    return Place.FAILED if status is Status.FAILED else Place.DONE
