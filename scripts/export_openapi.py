"""Write the app's OpenAPI document to openapi/openapi.json (what clients are generated from).

    python scripts/export_openapi.py [--check]

With ``--check`` nothing is written; the exit status says whether the committed file is current.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.app import app

SPEC = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def render() -> str:
    """The spec as committed: sorted keys, two-space indent, trailing newline."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if openapi/openapi.json is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = SPEC.read_text() if SPEC.exists() else ""
        if current != text:
            print(f"{SPEC} is out of date: run python scripts/export_openapi.py", file=sys.stderr)
            return 1
        return 0
    SPEC.parent.mkdir(exist_ok=True)
    SPEC.write_text(text)
    print(f"wrote {SPEC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
