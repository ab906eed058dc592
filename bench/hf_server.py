"""Baseline (d): Hugging Face `GPT2LMHeadModel.generate` (KV cache, no batching), serialized.

    python -m bench.hf_server MODEL_DIR --port PORT

The converted directory is loaded as is. `generate` runs in its own thread and hands each new
token over through a streamer, so the server can stream it at once (`naive_api`).
"""

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel
from transformers.generation.streamers import BaseStreamer

from bench import naive_api


class TokenQueue(BaseStreamer):
    """Queues generate's new token ids (it pushes the prompt first, then one id per step)."""

    def __init__(self):
        self.queue: queue.Queue[int | None] = queue.Queue()
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate pushes the prompt ids first
            self.prompt_seen = True
            return
        self.queue.put(int(value.reshape(-1)[0]))

    def end(self) -> None:
        self.queue.put(None)


def generator(model: GPT2LMHeadModel):
    def generate(ids: list[int], max_tokens: int, temperature: float) -> Iterator[int]:
        streamer = TokenQueue()
        kwargs = {
            "input_ids": torch.tensor([ids]),
            "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "max_new_tokens": max_tokens,
            "min_new_tokens": max_tokens,  # ignore_eos, as the benchmark asks
            "do_sample": temperature > 0,
            "temperature": temperature or None,
            "top_k": None,  # plain sampling, as the other servers (HF's default would be 50)
            "top_p": None,
            "pad_token_id": 0,
            "streamer": streamer,
        }

        def work() -> None:
            try:
                with torch.no_grad():
                    model.generate(**kwargs)
            finally:
                streamer.queue.put(None)  # unblock the reader even if generate failed

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        while (tok := streamer.queue.get()) is not None:
            yield tok
        thread.join()

    return generate


def load(model_dir: Path):
    model = GPT2LMHeadModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    return generator(model)


if __name__ == "__main__":
    naive_api.main(__doc__, load)
