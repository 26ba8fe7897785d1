"""`make mutants`' session config: tests/mutants.toml, its module-path narrowed to MODULE when
given (one module or several, comma-separated, each one that the file lists).

    python tests/mutants_config.py tests/mutants.toml [MODULE[,MODULE...]] > session.toml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import tomllib


def main() -> int:
    """Print the session's config; exit 2 naming a module the file does not list."""
    config = tomllib.loads(Path(sys.argv[1]).read_text())["cosmic-ray"]
    listed: list[str] = config["module-path"]
    wanted = [m.strip() for m in (sys.argv[2] if len(sys.argv) > 2 else "").split(",") if m.strip()]
    unknown = [m for m in wanted if m not in listed]
    if unknown:
        print(f"MODULE={','.join(unknown)}: not in {sys.argv[1]}; choose among: "
              + ", ".join(listed), file=sys.stderr)
        return 2
    print("[cosmic-ray]")
    print(f"module-path = {json.dumps(wanted or listed)}")
    print(f"timeout = {float(config['timeout'])}")
    print(f"excluded-modules = {json.dumps(config.get('excluded-modules', []))}")
    print(f"test-command = {json.dumps(config['test-command'])}")
    print("\n[cosmic-ray.distributor]")
    print(f"name = {json.dumps(config['distributor']['name'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
