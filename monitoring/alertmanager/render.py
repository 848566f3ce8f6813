"""Render Alertmanager's config from its template: ``python render.py [--mode 644] TEMPLATE OUTPUT``.

Alertmanager does not expand environment variables in its config, so the values (the webhook URL from .env)
are written into the template here: by the one-shot ``alertmanager-config`` job in compose and by the native
dev stack (scripts/devstack), one code path for both. Standard library only: it runs in a plain Python image.
Each ``$NAME`` of the template takes the environment variable NAME, written JSON-quoted: a JSON string is a
valid YAML double-quoted scalar, so a URL holding ``&``, ``#``, ``:`` or quotes stays one string.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit


class RenderError(ValueError):
    """A value the template needs is missing or unusable; the message names the variable."""


def render(template: str, values: Mapping[str, str]) -> str:
    """The template with every ``$NAME`` replaced by values[NAME], JSON-quoted; every name is required."""
    tmpl = string.Template(template)
    names = tmpl.get_identifiers()
    missing = [name for name in names if not values.get(name, "").strip()]
    if missing:
        raise RenderError(f"set {', '.join(missing)} (see .env.example): Alertmanager's config needs it")
    for name in names:
        if name.endswith("_URL"):
            url = urlsplit(values[name].strip())
            if url.scheme not in {"http", "https"} or not url.netloc:
                raise RenderError(f"{name} must be an http:// or https:// URL")
    return tmpl.substitute({name: json.dumps(values[name].strip()) for name in names})


def write(path: Path, text: str, mode: int = 0o600) -> None:
    """Write the rendered config with the given permissions (it holds the webhook URL, a secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)  # the umask must not narrow it
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Render TEMPLATE with the environment into OUTPUT; exit 1 with a message naming a missing variable."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="600", help="octal permissions of OUTPUT (default 600)")
    parser.add_argument("template", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    try:
        text = render(args.template.read_text(), os.environ)
    except RenderError as exc:
        print(f"alertmanager config: {exc}", file=sys.stderr)
        return 1
    write(args.output, text, int(args.mode, 8))
    print(f"alertmanager config: rendered {args.template.name} into {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
