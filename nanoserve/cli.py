"""The `nanoserve` command: `nanoserve convert|serve|doctor ...`."""

import importlib
import sys

from nanoserve import __version__

# subcommand -> (module with `main(argv) -> int`, one-line summary); imported only when chosen,
# since each pulls in torch or vLLM
SUBCOMMANDS = {
    "convert": (
        "nanoserve.convert.cli",
        "turn a nanoGPT ckpt.pt into a verified Hugging Face GPT-2 directory",
    ),
    "serve": (
        "nanoserve.server.cli",
        "serve a model (directory or ckpt.pt) behind an OpenAI-compatible API",
    ),
    "doctor": (
        "nanoserve.server.doctor",
        "check that `serve` with the same flags can work here, and how to fix it",
    ),
}

USAGE = "usage: nanoserve {" + ",".join(SUBCOMMANDS) + "} ..."
HELP = "\n".join(
    [
        USAGE,
        "",
        "Serve nanoGPT checkpoints with vLLM behind an OpenAI-compatible API.",
        "",
        "commands:",
        *(f"  {name:<9}{summary}" for name, (_, summary) in SUBCOMMANDS.items()),
        "",
        "`nanoserve COMMAND --help` lists a command's options; `nanoserve --version` the version.",
    ]
)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand's own `main`; 2 for an unknown or missing subcommand."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(HELP, file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        print(f"nanoserve {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"{USAGE}\nnanoserve: error: unknown command {name!r}", file=sys.stderr)
        return 2
    return importlib.import_module(SUBCOMMANDS[name][0]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
