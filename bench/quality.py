"""Model quality measured through a running server, the way lm-eval-harness does it.

- Held-out loss: the Shakespeare text the demo model never trained on (the last 10% of
  examples/shakespeare_char/input.txt, split exactly as prepare.py splits it), cut into windows
  of the model's context, each scored with `echo: true, logprobs: 1, max_tokens: 0`. The loss is
  the mean negative log-likelihood of every token after a window's first (which has no context),
  in nats per token (per character for the character-level demo); perplexity is its exp.
- Top-1 agreement: the same requests return each position's most likely token; the share of
  positions where a variant's equals float32's is how often the quantized model would have
  predicted the same next token from the same text.
- Greedy agreement: free-running greedy continuations of held-out prompts, token by token
  against float32's; once one token differs the rest usually does too, so the figure is the
  share of identical tokens and the mean length of the identical prefix.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "examples" / "shakespeare_char" / "input.txt"


def heldout_text(chars: int) -> str:
    """The first `chars` characters of the demo's validation split (last 10%, not shuffled)."""
    text = TEXT.read_text()
    start = int(0.9 * len(text))  # prepare.py: n_train = int(0.9 * len(ids)), one id a char
    return text[start : start + chars]


class Client:
    """The few requests the measurement sends, with the bench's bearer key."""

    def __init__(self, url: str, model: str, api_key: str):
        self.model = model
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=600
        )

    def tokenize(self, text: str) -> list[int]:
        r = self.http.post("/tokenize", json={"model": self.model, "prompt": text})
        r.raise_for_status()
        return r.json()["tokens"]

    def complete(self, body: dict) -> dict:
        r = self.http.post("/v1/completions", json={"model": self.model, **body})
        r.raise_for_status()
        return r.json()["choices"][0]


def score(client: Client, ids: list[int], window: int) -> dict:
    """Per scored position: negative log-likelihood and the model's top-1 token."""
    nll, top1 = [], []
    for i in range(0, len(ids) - 1, window):
        chunk = ids[i : i + window]
        if len(chunk) < 2:
            break
        lp = client.complete(
            {"prompt": chunk, "echo": True, "logprobs": 1, "max_tokens": 0, "temperature": 0}
        )["logprobs"]
        nll += [-x for x in lp["token_logprobs"][1:]]
        top1 += [max(t, key=t.get) for t in lp["top_logprobs"][1:]]
    return {"nll": nll, "top1": top1}


def greedy(client: Client, prompts: list[list[int]], n: int) -> list[list[str]]:
    """Greedy continuations (as token strings) of every prompt, sent concurrently."""

    def one(prompt: list[int]) -> list[str]:
        body = {"prompt": prompt, "max_tokens": n, "temperature": 0, "logprobs": 1}
        return client.complete(body)["logprobs"]["tokens"]

    with ThreadPoolExecutor(len(prompts)) as pool:
        return list(pool.map(one, prompts))


def agreement(mine: list, reference: list) -> float:
    """Share of positions holding the same item."""
    return sum(a == b for a, b in zip(mine, reference, strict=True)) / len(reference)


def greedy_agreement(mine: list[list[str]], reference: list[list[str]]) -> dict:
    """Identical tokens (share) and the mean identical prefix over the continuations."""
    prefixes = []
    for a, b in zip(mine, reference, strict=True):
        k = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(b))
        prefixes.append(k)
    same = sum(agreement(a, b) * len(b) for a, b in zip(mine, reference, strict=True))
    return {
        "identical_share": same / sum(map(len, reference)),
        "mean_identical_prefix": sum(prefixes) / len(prefixes),
        "tokens": sum(map(len, reference)),
    }
