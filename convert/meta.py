"""Read nanoGPT's `meta.pkl` (char vocabulary) safely; find it the way nanoGPT's sample.py does."""

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

from nanoserve.convert.errors import ConvertError, UnsafePickleError

PLAIN_TYPES = (dict, list, str, int)  # all meta.pkl needs; none of them needs a pickle global


class _PlainUnpickler(pickle.Unpickler):
    """Builds only what pickle's own opcodes can: every global lookup is refused."""

    def find_class(self, module: str, name: str) -> object:
        raise UnsafePickleError(
            f"refusing to unpickle meta.pkl: it asks for {module}.{name}; "
            "only plain dict/list/str/int are accepted"
        )


def _check_plain(obj: object, where: str = "meta") -> None:
    if not isinstance(obj, PLAIN_TYPES):
        raise UnsafePickleError(
            f"refusing meta.pkl: {where} is a {type(obj).__name__}; "
            "only plain dict/list/str/int are accepted"
        )
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, f"a key of {where}")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")


def load_plain_pickle(data: bytes) -> object:
    """Unpickle `data`, accepting only plain dict/list/str/int (raises UnsafePickleError)."""
    try:
        obj = _PlainUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # corrupt or truncated pickles raise a zoo of types
        raise ConvertError(f"meta.pkl is not a readable pickle ({type(e).__name__}: {e})") from None
    _check_plain(obj)
    return obj


@dataclass
class CharVocab:
    """A char-level vocabulary: `itos[i]` is the single character of token id i."""

    itos: list[str]
    source: Path

    @property
    def size(self) -> int:
        return len(self.itos)


def _vocab_from_meta(meta: object, path: Path) -> CharVocab:
    if not isinstance(meta, dict) or not isinstance(meta.get("stoi"), dict):
        raise ConvertError(f"{path}: expected a dict with 'stoi' (char -> id), as nanoGPT writes")
    stoi: dict = meta["stoi"]
    n = len(stoi)
    if sorted(stoi.values()) != list(range(n)):
        raise ConvertError(f"{path}: stoi ids are not exactly 0..{n - 1}")
    bad = [s for s in stoi if len(s) != 1]
    if bad:
        raise ConvertError(f"{path}: not a char vocabulary, multi-char tokens {bad[:5]}")
    itos = [""] * n
    for ch, i in stoi.items():
        itos[i] = ch
    if "vocab_size" in meta and meta["vocab_size"] != n:
        raise ConvertError(f"{path}: vocab_size {meta['vocab_size']} but stoi has {n} entries")
    return CharVocab(itos=itos, source=path)


def load_meta(path: str | Path) -> CharVocab:
    """Read a meta.pkl into a CharVocab, refusing unsafe or malformed pickles."""
    p = Path(path)
    if not p.is_file():
        raise ConvertError(f"meta file not found: {p}")
    return _vocab_from_meta(load_plain_pickle(p.read_bytes()), p)


def find_meta(
    explicit: str | Path | None, ckpt_path: Path, dataset: str | None, cwd: Path | None = None
) -> Path | None:
    """`--meta`, else meta.pkl next to the checkpoint, else `data/<dataset>/meta.pkl` under cwd.

    An explicit path must exist; the fallbacks are tried in order and None means "no meta.pkl:
    the model uses GPT-2's BPE vocabulary", as in nanoGPT's sample.py.
    """
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file():
            raise ConvertError(f"meta file not found: {p}")
        return p
    candidates = [ckpt_path.parent / "meta.pkl"]
    if dataset:
        candidates.append((cwd or Path.cwd()) / "data" / dataset / "meta.pkl")
    return next((c for c in candidates if c.is_file()), None)
