"""nanoGPT checkpoint -> verified Hugging Face GPT-2 directory (`nanoserve convert`).

`convert.pipeline.convert_checkpoint` is the entry point for code; importing this package stays
cheap (torch loads only when a torch-using module is imported), so the server can use
`convert.tokenizer.unknown_chars` freely.
"""

__all__ = ["convert_checkpoint"]


def __getattr__(name: str) -> object:
    if name == "convert_checkpoint":  # lazy: the pipeline imports torch
        from nanoserve.convert.pipeline import convert_checkpoint

        return convert_checkpoint
    raise AttributeError(f"module 'convert' has no attribute {name!r}")
