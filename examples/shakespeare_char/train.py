"""Train the bundled character-level Shakespeare model on the CPU; writes a weights-only ckpt.pt.

Usage (the defaults are the committed recipe; about 20 minutes on 2 CPU cores):
python examples/shakespeare_char/prepare.py
python examples/shakespeare_char/train.py
"""

import argparse
import math
import pickle
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from nanoserve.convert.reference import GPT, GPTConfig, make_checkpoint

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    a = p.add_argument
    a("--data-dir", type=Path, default=HERE, help="holds train.bin, val.bin, meta.pkl")
    a("--out", type=Path, default=HERE / "ckpt.pt", help="best-val checkpoint is written here")
    # model (head size n_embd / n_head must be one vLLM's CPU attention supports, e.g. 32 or 64)
    a("--n-layer", type=int, default=4)
    a("--n-head", type=int, default=4)
    a("--n-embd", type=int, default=128)
    a("--block-size", type=int, default=128, help="context length in characters")
    a("--dropout", type=float, default=0.0, help="too few epochs to overfit: no dropout")
    a("--bias", action=argparse.BooleanOptionalAction, default=False, help="nanoGPT's default")
    # optimisation
    a("--batch-size", type=int, default=32)
    a("--max-iters", type=int, default=3000)
    a("--lr", type=float, default=2e-3, help="peak learning rate, after warmup")
    a("--min-lr", type=float, default=2e-4, help="cosine decays to this by --max-iters")
    a("--warmup-iters", type=int, default=100)
    a("--weight-decay", type=float, default=0.1, help="matrices only, not gains or biases")
    a("--beta2", type=float, default=0.99, help="few tokens per step: a shorter memory helps")
    a("--grad-clip", type=float, default=1.0)
    # evaluation and run
    a("--eval-interval", type=int, default=250)
    a("--eval-iters", type=int, default=40, help="batches per split per evaluation")
    a("--log-interval", type=int, default=50)
    a("--seed", type=int, default=1337)
    a("--threads", type=int, default=2)
    return p.parse_args(argv)


def load_split(data_dir: Path, split: str) -> torch.Tensor:
    ids = np.fromfile(data_dir / f"{split}.bin", dtype=np.uint16)
    return torch.from_numpy(ids.astype(np.int64))


def get_batch(
    data: torch.Tensor, starts: torch.Tensor, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-character targets, each (B, T), for windows beginning at `starts`."""
    offsets = torch.arange(block_size)
    x = data[starts[:, None] + offsets]
    y = data[starts[:, None] + offsets + 1]
    return x, y


def lr_at(it: int, args: argparse.Namespace) -> float:
    """Linear warmup, then cosine decay from --lr to --min-lr at --max-iters."""
    if it < args.warmup_iters:
        return args.lr * (it + 1) / args.warmup_iters
    frac = (it - args.warmup_iters) / max(1, args.max_iters - args.warmup_iters)
    return args.min_lr + 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))) * (args.lr - args.min_lr)


@torch.no_grad()
def estimate_loss(model: GPT, evals: dict, block_size: int) -> dict[str, float]:
    """Mean loss per split over the same fixed batches every time, so evaluations compare."""
    model.eval()
    out = {}
    for split, (data, batches) in evals.items():
        losses = []
        for starts in batches:
            x, y = get_batch(data, starts, block_size)
            losses.append(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item())
        out[split] = sum(losses) / len(losses)
    model.train()
    return out


def make_optimizer(model: GPT, args: argparse.Namespace) -> torch.optim.AdamW:
    # as nanoGPT: decay the matrices (and embeddings), not LayerNorm gains or biases
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, args.beta2))


def build_model(args: argparse.Namespace) -> GPT:
    """The model for --data-dir's vocabulary, shaped by the command-line args."""
    with open(args.data_dir / "meta.pkl", "rb") as f:
        vocab_size = pickle.load(f)["vocab_size"]
    cfg = GPTConfig(
        block_size=args.block_size, vocab_size=vocab_size, n_layer=args.n_layer,
        n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout, bias=args.bias,
    )  # fmt: skip
    return GPT(cfg)


def random_starts(
    data: torch.Tensor, args: argparse.Namespace, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Batch of random window starts (B,) into `data`."""
    return torch.randint(len(data) - args.block_size, (args.batch_size,), generator=gen)


def train_step(
    model: GPT,
    optimizer: torch.optim.Optimizer,
    data: torch.Tensor,
    it: int,
    args: argparse.Namespace,
) -> float:
    """One AdamW step on a random training batch; returns its loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(it, args)
    x, y = get_batch(data, random_starts(data, args), args.block_size)
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    optimizer.step()
    return loss.item()


def save(model: GPT, args: argparse.Namespace, iter_num: int, best_val: float) -> None:
    """nanoGPT's ckpt.pt layout, weights only (no optimizer state) to keep the file small."""
    config = {k: v for k, v in vars(args).items() if not isinstance(v, Path)}  # no local paths
    config["dataset"] = "shakespeare_char"  # nanoGPT's sample.py finds data/<dataset>/meta.pkl
    ckpt = make_checkpoint(
        model, iter_num=iter_num, best_val_loss=torch.tensor(best_val), config=config
    )
    torch.save(ckpt, args.out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model = build_model(args)
    cfg = model.config
    print(f"{model.num_params():,} parameters, head size {cfg.n_embd // cfg.n_head}")
    optimizer = make_optimizer(model, args)
    data = {split: load_split(args.data_dir, split) for split in ("train", "val")}
    gen = torch.Generator().manual_seed(args.seed)  # own stream: the same eval batches every run
    evals = {s: (d, [random_starts(d, args, gen) for _ in range(args.eval_iters)])
             for s, d in data.items()}  # fmt: skip

    best_val, t0 = float("inf"), time.time()
    for it in range(args.max_iters + 1):
        if it % args.eval_interval == 0 or it == args.max_iters:
            losses = estimate_loss(model, evals, args.block_size)
            saved = losses["val"] < best_val
            if saved:
                best_val = losses["val"]
                save(model, args, it, best_val)
            print(
                f"step {it}: train {losses['train']:.4f}, val {losses['val']:.4f}"
                f"{' (saved)' if saved else ''}, {time.time() - t0:.0f}s"
            )
        if it < args.max_iters:
            loss = train_step(model, optimizer, data["train"], it, args)
            if it % args.log_interval == 0:
                print(f"iter {it}: loss {loss:.4f}, {(time.time() - t0) / (it + 1):.3f}s/iter")
    print(f"done in {time.time() - t0:.0f}s; best val loss {best_val:.4f} -> {args.out}")


if __name__ == "__main__":
    main()
