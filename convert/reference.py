"""A compact nanoGPT-architecture model: the ground truth the converter is checked against.

Written from the architecture (GPT-2 with pre-LayerNorm, exact GELU, tied embeddings, optional
biases), with nanoGPT's parameter names so its state dict *is* a nanoGPT state dict. Used by the
converter's verification, by the tests to make checkpoints, and by the demo model's training script.
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPTConfig:
    block_size: int = 1024  # longest sequence the position table covers
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64, as nanoGPT does
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # False: no biases in Linear and LayerNorm layers (nanoGPT's option)

    @classmethod
    def from_model_args(cls, model_args: dict) -> "GPTConfig":
        """Build from a checkpoint's `model_args`, ignoring keys this config does not know."""
        known = {k: model_args[k] for k in asdict(cls()) if k in model_args}
        return cls(**known)


class LayerNorm(nn.Module):
    """LayerNorm whose bias is optional (torch's has no `bias=False` before 2.1)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be a multiple of n_head"
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v at once
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()  # exact (erf) GELU, as nanoGPT: HF must be told "gelu", not gelu_new
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # pre-norm residual, as GPT-2
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
                ln_f=LayerNorm(cfg.n_embd, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied, as GPT-2 and nanoGPT
        self.apply(self._init_weights)
        # GPT-2's scaled init of residual projections keeps activations sane as depth grows
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """All parameters, the tied token embedding counted once and the position table included
        (nanoGPT's `get_num_params(non_embedding=False)`)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab_size) for token ids (B, T)."""
        return self.lm_head(self.hidden_states(idx))

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """Final (post-ln_f) hidden states (B, T, n_embd): what lm_head turns into logits."""
        seq_len = idx.shape[1]
        assert seq_len <= self.config.block_size, (
            f"sequence {seq_len} > block_size {self.config.block_size}"
        )
        pos = torch.arange(seq_len, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x)

    @torch.no_grad()
    def generate_greedy(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation (temperature 0) of `ids`: the new token ids only."""
        idx = torch.tensor([ids], dtype=torch.long)
        out: list[int] = []
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.config.block_size :])[0, -1]
            nxt = int(torch.argmax(logits))
            out.append(nxt)
            idx = torch.cat([idx, torch.tensor([[nxt]])], dim=1)
        return out


def make_checkpoint(model: GPT, **extra) -> dict:
    """A dict shaped like nanoGPT's train.py saves (`torch.save` it to get a ckpt.pt)."""
    ckpt = {
        "model": model.state_dict(),
        "model_args": asdict(model.config),
        "iter_num": 0,
        "best_val_loss": torch.tensor(float("inf")),
        "config": {},
    }
    ckpt.update(extra)
    return ckpt
