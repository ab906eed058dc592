"""The `nanoserve` command: `nanoserve convert ...`, `nanoserve serve ...`."""

import importlib
import sys

# subcommand -> module with `main(argv) -> int`, imported only when chosen (each is heavy)
SUBCOMMANDS = {
    "convert": "convert.cli",
    "serve": "server.cli",
}

USAGE = "usage: nanoserve {" + ",".join(SUBCOMMANDS) + "} ..."


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand's own `main`; 2 for an unknown or missing subcommand."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"{USAGE}\nnanoserve: error: unknown command {name!r}", file=sys.stderr)
        return 2
    return importlib.import_module(SUBCOMMANDS[name]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
