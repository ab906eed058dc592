"""`nanoserve convert CKPT --out DIR`: argument parsing and one-line errors around the pipeline."""

import argparse
import sys

from nanoserve.convert.errors import ConvertError
from nanoserve.convert.mapping import DTYPES


def build_parser(prog: str = "nanoserve convert") -> argparse.ArgumentParser:
    """The `convert` command line."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Convert a nanoGPT checkpoint into a verified Hugging Face GPT-2 directory "
        "that vLLM can serve.",
    )
    p.add_argument("ckpt", metavar="CKPT", help="a nanoGPT ckpt.pt, or a directory holding one")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must not exist)")
    p.add_argument(
        "--meta",
        metavar="PATH",
        help="char vocabulary (nanoGPT meta.pkl); default: next to CKPT, else "
        "data/<dataset>/meta.pkl; none found means GPT-2 BPE",
    )
    p.add_argument("--tokenizer", metavar="DIR", help="use this Hugging Face tokenizer directory")
    # validated by the pipeline, not `choices`, so the API and the CLI say the same thing
    p.add_argument("--dtype", default="float32", metavar="|".join(DTYPES), help="weight dtype")
    p.add_argument(
        "--quantize",
        choices=["int8"],
        help="int8: projection weights int8 per output channel, activations int8 per token "
        "(vLLM's compressed-tensors W8A8, which has CPU kernels); verified against the "
        "checkpoint like a half-precision dtype",
    )
    p.add_argument("--force", action="store_true", help="replace an existing conversion at --out")
    p.add_argument("--no-verify", action="store_true", help="skip the logit-parity check")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the converter; 0 on success, 2 with a one-line `error:` on stderr otherwise."""
    args = build_parser().parse_args(argv)
    from nanoserve.convert.pipeline import (
        convert_checkpoint,  # torch-heavy: after --help has had its say
    )

    try:
        convert_checkpoint(
            args.ckpt,
            args.out,
            meta=args.meta,
            tokenizer=args.tokenizer,
            dtype=args.dtype,
            quantize=args.quantize,
            force=args.force,
            verify=not args.no_verify,
            log=lambda line: print(line, flush=True),
        )
    except ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
