"""Encode input.txt character by character into train.bin / val.bin (uint16) and meta.pkl.

Usage, from anywhere (writes next to this file):
python examples/shakespeare_char/prepare.py
"""

import pickle
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    text = (HERE / "input.txt").read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    ids = np.array([stoi[ch] for ch in text], dtype=np.uint16)  # vocab is tiny: uint16 is plenty

    n_train = int(0.9 * len(ids))  # first 90% trains, last 10% validates (no shuffling)
    ids[:n_train].tofile(HERE / "train.bin")
    ids[n_train:].tofile(HERE / "val.bin")
    # plain dict/int/str only: the converter reads it with a restricted unpickler
    meta = {"vocab_size": len(chars), "stoi": stoi, "itos": itos}
    with open(HERE / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)

    print(f"{len(text):,} characters, vocab {len(chars)}: {''.join(chars)!r}")
    print(f"train {n_train:,} tokens, val {len(ids) - n_train:,} tokens")


if __name__ == "__main__":
    main()
