"""Which YMIR project a package goes to, and who may send it there.

A top-level inbox folder routed in ``[import.ymir_api.projects]`` (``team-a = 3``) takes its
packages to that project; any other package goes to the default project, if there is one. A
route that names a group (``team-a = { project = 3, group = "team-a" }``) takes packages only
from that group's members.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ymir_dropbox.reading.problems import Problem, register_codes
from ymir_dropbox.storing.backends import ImportFailed, PreparedPackage
from ymir_dropbox.storing.checks import Finding

# The routes' problem codes (see reading.problems).
PROBLEMS: dict[str, str] = {
    "import.ymir_unrouted": "no YMIR project for the package's folder and no default project",
    "import.ymir_not_allowed": "the package's owner is not in the group its routed folder takes",
}
register_codes(PROBLEMS)


@dataclass(frozen=True, slots=True)
class Route:
    project_id: int
    reason: str  # how the project was chosen, for the ledger's notes


@dataclass(frozen=True, slots=True)
class Routes:
    projects: Mapping[str, int]  # top-level inbox folder -> project id
    writers: Mapping[str, str]  # top-level inbox folder -> the group whose members send
    default_project: int  # 0: none (packages outside a routed folder fail)
    processing: Path  # where packages are imported from (their path's top folder routes)

    def route(self, package: PreparedPackage) -> Route:
        """The project: by the top-level inbox sub-folder, else the default project."""
        try:
            relative = PurePosixPath(package.path.relative_to(self.processing))
        except ValueError:
            relative = PurePosixPath(package.path.name)
        if len(relative.parts) > 1 and relative.parts[0] in self.projects:
            folder = relative.parts[0]
            project_id = self.projects[folder]
            group = self.writers.get(folder)
            if group is not None:
                _refuse_unless_member(package, relative, folder, group, project_id)
            return Route(project_id, f"routed by the folder {folder!r}")
        if self.default_project:
            return Route(self.default_project, "the default project")
        raise ImportFailed(
            [
                Problem(
                    "import.ymir_unrouted",
                    "import.ymir_api.projects",
                    f"no YMIR project for {relative}: its top-level folder is not in "
                    "import.ymir_api.projects and import.ymir_api.project_id is 0",
                )
            ]
        )


def _refuse_unless_member(
    package: PreparedPackage, relative: PurePosixPath, folder: str, group: str, project_id: int
) -> None:
    """A routed folder that names a group takes packages only from its members: the owner of
    the validated file (set by the kernel when the uploader wrote it) must be in the group,
    by its primary group or by the group's member list. Anyone may make a folder of that
    name in the inbox; only members import into its project."""
    owner = os.fstat(package.source.fileno()).st_uid
    try:
        user: pwd.struct_passwd | None = pwd.getpwuid(owner)
    except KeyError:
        user = None
    if user is not None and _is_member(user, group):
        return
    who = f"{user.pw_name} (uid {owner})" if user is not None else f"uid {owner}, unknown here"
    raise ImportFailed(
        [
            Problem(
                "import.ymir_not_allowed",
                f"import.ymir_api.projects.{folder}.group",
                f"{relative}: its owner {who} is not in the group {group!r}, the only "
                f"uploaders the folder {folder!r} takes into YMIR project {project_id}",
            )
        ]
    )


def _is_member(user: pwd.struct_passwd, group: str) -> bool:
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return False  # `check` says the group does not exist
    return user.pw_gid == entry.gr_gid or user.pw_name in entry.gr_mem


def writer_findings(writers: Mapping[str, str]) -> Iterator[Finding]:
    """``check``: whether each group a routed folder names exists here."""
    for folder, group in sorted(writers.items()):
        what = f"import.ymir_api.projects.{folder}.group"
        try:
            entry = grp.getgrnam(group)
        except KeyError:
            yield Finding(what, False, f"no group {group!r} on this host: every package in "
                          f"inbox/{folder}/ fails as import.ymir_not_allowed")  # fmt: skip
            continue
        yield Finding(what, True, f"inbox/{folder}/ takes packages from members of {group!r} "
                      f"(gid {entry.gr_gid}) only")  # fmt: skip
