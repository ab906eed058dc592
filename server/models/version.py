"""A model version: which weights a converted directory holds, and whether two can swap in place.

A version's id is what every answer carries (`system_fingerprint`, `x-model-version`): the
checkpoint's `iter_num` and the start of its content hash, `iter2000-1a2b3c4d`, or the hash alone
for a directory nanoserve did not convert from a nanoGPT checkpoint.
"""

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from nanoserve.convert.output import sha256_file

# what the model computes with; anything else in the directory may differ between two versions
# that swap in place (the provenance record, generation defaults)
ARCHITECTURE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class Version:
    id: str
    directory: Path
    iter_num: int | None = None
    best_val_loss: float | None = None
    source_sha256: str | None = None
    loaded_at: float = field(default_factory=time.time)

    def card(self) -> dict:
        """What /v1/models/{id} shows of it."""
        return {
            "id": self.id,
            "iter_num": self.iter_num,
            "best_val_loss": self.best_val_loss,
            "loaded_at": int(self.loaded_at),
        }


def describe(model_dir: Path) -> Version:
    """The version a converted directory holds (its nanoserve.json, written by the converter)."""
    record = model_dir / "nanoserve.json"
    source = json.loads(record.read_text()).get("source", {}) if record.is_file() else {}
    digest = source.get("sha256") or _weights_digest(model_dir)
    iter_num = source.get("iter_num")
    vid = f"iter{iter_num}-{digest[:8]}" if iter_num is not None else digest[:8]
    loss = source.get("best_val_loss")
    return Version(vid, model_dir, iter_num, loss, source.get("sha256"))


def architecture(model_dir: Path) -> str:
    """A key equal for two directories exactly when one's weights can replace the other's in a
    running engine: the same config (layers, width, vocabulary, context, dtype, quantization)
    and the same tokenizer."""
    h = hashlib.sha256()
    for name in ARCHITECTURE_FILES:
        path = model_dir / name
        h.update(name.encode() + b"\0")
        if path.is_file():
            h.update(_canonical(path))
    return h.hexdigest()


def _canonical(path: Path) -> bytes:
    return json.dumps(json.loads(path.read_text()), sort_keys=True).encode()


def _weights_digest(model_dir: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")):
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()
