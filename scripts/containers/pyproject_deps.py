"""Print the runtime dependencies of pyproject.toml files, one per line, minus the project's own packages.

The Dockerfiles install these (pinned by constraints.txt) in a layer of their own, before any source code is
copied, so a code change does not reinstall dependencies. Standard library only: it runs on the bare base image.

    python pyproject_deps.py core/pyproject.toml serving-flask/pyproject.toml > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# Distribution names of the project's own packages: installed from source in the code layer, not from the index.
OWN_PREFIX = "mlstack-"


def _name(requirement: str) -> str:
    """The normalised distribution name of a PEP 508 requirement string."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def dependencies(paths: list[Path]) -> list[str]:
    """The [project] dependencies of every file, without duplicates or the project's own packages, in order."""
    result: list[str] = []
    for path in paths:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
        for requirement in project.get("dependencies", []):
            if not _name(requirement).startswith(OWN_PREFIX) and requirement not in result:
                result.append(requirement)
    return result


def main(argv: list[str]) -> int:
    """Write the requirement lines to stdout; exit code 2 without arguments."""
    if not argv:
        sys.stderr.write("usage: pyproject_deps.py PYPROJECT.toml...\n")
        return 2
    sys.stdout.write("".join(f"{line}\n" for line in dependencies([Path(arg) for arg in argv])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
