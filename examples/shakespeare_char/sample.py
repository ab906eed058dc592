"""Print a sample from the bundled checkpoint with the reference model (no vLLM involved).

Usage:
python examples/shakespeare_char/sample.py                   # temperature 0.8
python examples/shakespeare_char/sample.py --temperature 0   # greedy
"""

import argparse
import pickle
from pathlib import Path

import torch
from nanoserve.convert.reference import GPT, GPTConfig

HERE = Path(__file__).resolve().parent


@torch.no_grad()
def sample(model: GPT, ids: list[int], max_new_tokens: int, temperature: float) -> list[int]:
    """Continuation of `ids` (new ids only), drawn at `temperature`; 0 means greedy."""
    if temperature == 0:
        return model.generate_greedy(ids, max_new_tokens)
    idx = torch.tensor([ids])
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.config.block_size :])[:, -1] / temperature  # (1, vocab)
        nxt = torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1)
        idx = torch.cat([idx, nxt], dim=1)
    return idx[0, len(ids) :].tolist()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ckpt", type=Path, default=HERE / "ckpt.pt")
    p.add_argument("--meta", type=Path, default=HERE / "meta.pkl")
    p.add_argument("--start", default="\n", help="prompt; nanoGPT's sample.py starts at a newline")
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args()
    torch.manual_seed(args.seed)

    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    model = GPT(GPTConfig.from_model_args(ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    with open(args.meta, "rb") as f:
        meta = pickle.load(f)  # the bundled file; the converter reads others with a safe unpickler
    stoi, itos = meta["stoi"], meta["itos"]

    ids = sample(model, [stoi[c] for c in args.start], args.max_new_tokens, args.temperature)
    print(args.start + "".join(itos[i] for i in ids))


if __name__ == "__main__":
    main()
