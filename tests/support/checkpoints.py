"""Tiny nanoGPT-format checkpoints for tests, made with the reference model (random weights)."""

import pickle
from pathlib import Path

import torch
from nanoserve.convert.cli import main as convert_main
from nanoserve.convert.reference import GPT, GPTConfig, make_checkpoint

# nanoGPT's shakespeare_char vocabulary: 65 characters, including ' ' and '\n'
SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
GPT2_PADDED = 50304


def tiny_model(
    vocab_size: int = len(SHAKESPEARE_CHARS),
    *,
    n_layer: int = 2,
    n_head: int = 2,
    n_embd: int = 64,
    block_size: int = 32,
    bias: bool = True,
    seed: int = 0,
    scale: float = 1.0,
) -> GPT:
    """A random reference GPT; `scale` > 1 spreads the logits so greedy choices are clear-cut."""
    torch.manual_seed(seed)
    cfg = GPTConfig(block_size, vocab_size, n_layer, n_head, n_embd, 0.0, bias)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                p.mul_(scale)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.02)  # nonzero biases, so a dropped or misplaced one shows
    return model


def nanogpt_checkpoint(
    model: GPT,
    *,
    compiled: bool = False,
    mask_buffers: bool = False,
    optimizer: bool = False,
    dataset: str | None = None,
) -> dict:
    """What nanoGPT's train.py saves for `model`, with its optional quirks switched on."""
    sd = dict(model.state_dict())
    if mask_buffers:  # nanoGPT without flash attention registers causal masks as buffers
        T = model.config.block_size
        mask = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
        for i in range(model.config.n_layer):
            sd[f"transformer.h.{i}.attn.bias"] = mask
            sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    if compiled:
        sd = {f"_orig_mod.{k}": v for k, v in sd.items()}
    extra: dict = {"iter_num": 250, "best_val_loss": torch.tensor(1.4697)}
    if optimizer:
        params = list(model.parameters())
        state = {
            i: {
                "step": torch.tensor(250.0),
                "exp_avg": torch.zeros_like(p),
                "exp_avg_sq": torch.zeros_like(p),
            }
            for i, p in enumerate(params)
        }
        extra["optimizer"] = {"state": state, "param_groups": [{"lr": 1e-3, "params": [0]}]}
    if dataset is not None:
        extra["config"] = {"dataset": dataset, "batch_size": 12, "learning_rate": 1e-3}
    ckpt = make_checkpoint(model, **extra)
    ckpt["model"] = sd
    return ckpt


def write_meta(path: Path, chars: str = SHAKESPEARE_CHARS) -> Path:
    """nanoGPT's meta.pkl for a char vocabulary (ids in sorted order, as prepare.py assigns)."""
    chars = "".join(sorted(set(chars)))
    meta = {
        "vocab_size": len(chars),
        "itos": dict(enumerate(chars)),
        "stoi": {c: i for i, c in enumerate(chars)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(meta))
    return path


def save_checkpoint(ckpt: dict, path: Path) -> Path:
    """torch.save `ckpt` to `path` (parents created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def encode_chars(text: str, chars: str = SHAKESPEARE_CHARS) -> list[int]:
    """Ids of `text` in the sorted char vocabulary (what nanoGPT's sample.py does)."""
    stoi = {c: i for i, c in enumerate(sorted(set(chars)))}
    return [stoi[c] for c in text]


def char_checkpoint_dir(root: Path, *, meta: bool = True, **model_kw) -> tuple[Path, GPT]:
    """`root/ckpt.pt` for a random 65-char model (+ `root/meta.pkl`); returns (root, model)."""
    model = tiny_model(len(SHAKESPEARE_CHARS), **model_kw)
    save_checkpoint(nanogpt_checkpoint(model), root / "ckpt.pt")
    if meta:
        write_meta(root / "meta.pkl")
    return root, model


def gpt2_checkpoint_dir(root: Path, **model_kw) -> tuple[Path, GPT]:
    """`root/ckpt.pt` for a random model over GPT-2's padded vocabulary; returns (root, model)."""
    model = tiny_model(GPT2_PADDED, **model_kw)
    save_checkpoint(nanogpt_checkpoint(model), root / "ckpt.pt")
    return root, model


def greedy(model: GPT, ids: list[int], n: int, vocab: int) -> list[int]:
    """Greedy continuation over the first `vocab` ids (what a served, trimmed model can emit)."""
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            ctx = torch.tensor([(ids + out)[-model.config.block_size :]])
            out.append(int(model(ctx)[0, -1, :vocab].argmax()))
    return out


def greedy_margin(model: GPT, ids: list[int], generated: list[int], vocab: int) -> float:
    """Smallest top-1 minus top-2 logit gap along a greedy path (near-ties make tests flaky)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids + generated[:-1]]))[0, len(ids) - 1 :, :vocab]
    top2 = logits.topk(2, dim=-1).values
    return float((top2[:, 0] - top2[:, 1]).min())


def run_cli(argv: list, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `nanoserve convert ARGV`, run in-process."""
    code = convert_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
