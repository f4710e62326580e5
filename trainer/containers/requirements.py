"""The installed vertex-trainer's requirements, for images that choose their own TensorFlow.

`pip install vertex-trainer` must give a working trainer, so the package requires `tensorflow`.
But `tensorflow-cpu` (the CPU image's, without GPU kernels) is another distribution name that
pip does not take for it, and the slim serving image has no TensorFlow at all. So the
Dockerfiles install TensorFlow as they choose, then the wheel with `--no-deps`, then what this
prints: the requirements of the named parts, read from the wheel's own metadata (one list, in
setup.py), leaving out the distributions given with --without:

    python -m trainer.containers.requirements core --without tensorflow | pip install -r /dev/stdin
    python -m trainer.containers.requirements serve | pip install -r /dev/stdin

`core` is install_requires; any other name is that extra. No TensorFlow import.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys

from trainer.errors import TrainerError

DISTRIBUTION = "vertex-trainer"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(parts: list[str], without: list[str],
                 requires: list[str] | None = None) -> list[str]:
    """Requirement lines (markers other than the extra kept) of `parts` ("core" or extras)."""
    if requires is None:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    excluded = {_normal(name) for name in without}
    wanted = {_normal(part) for part in parts}
    found: set[str] = set()
    lines = []
    for line in requires:
        requirement, _, marker = line.partition(";")
        extra = _EXTRA.search(marker)
        part = _normal(extra.group(1)) if extra else "core"
        found.add(part)
        name = _NAME.match(requirement)
        if part not in wanted or name is None or _normal(name.group(1)) in excluded:
            continue
        rest = _EXTRA.sub("", marker).strip()
        rest = re.sub(r"^(and|or)\s+|\s+(and|or)$", "", rest).strip()
        lines.append(f"{requirement.strip()}; {rest}" if rest else requirement.strip())
    unknown = sorted(wanted - found - {"core"})
    if unknown:
        raise TrainerError(f"{DISTRIBUTION} has no extra {unknown[0]!r}; it has "
                           f"{sorted(found - {'core'})}")
    return sorted(set(lines), key=lines.index)


def main(argv=None) -> int:
    from trainer.cli import OneLineParser, run_cli

    def body():
        p = OneLineParser(prog="python -m trainer.containers.requirements",
                          description="Print the installed vertex-trainer's requirements of "
                                      "PART (core or an extra), one per line.")
        p.add_argument("parts", nargs="+", metavar="PART")
        p.add_argument("--without", action="append", default=[], metavar="DISTRIBUTION",
                       help="leave out this distribution (repeatable)")
        args = p.parse_args(argv)
        try:
            lines = requirements(args.parts, args.without)
        except importlib.metadata.PackageNotFoundError:
            raise TrainerError(f"{DISTRIBUTION} is not installed: pip install --no-deps its "
                               "wheel first") from None
        print("\n".join(lines))

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
