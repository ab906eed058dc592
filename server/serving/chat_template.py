"""Chat templates: turn a list of messages into one prompt for a base model, and know where the
assistant's turn ends.

The format is Hugging Face's: a Jinja template over `messages` (dicts with `role`, `content`),
`add_generation_prompt`, `bos_token` and `eos_token`, rendered in a sandbox with
`trim_blocks`/`lstrip_blocks` as `transformers` renders it. A nanoGPT model has no template of
its own, so the default is a plain transcript that any base model has seen the like of.
"""

import json
from pathlib import Path

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from nanoserve.server.engine.interface import StartupError

# "user: Hello\nassistant:" — every character is in nanoGPT's shakespeare_char vocabulary, and
# no trailing space after the last colon: BPE vocabularies attach the space to the next word.
DEFAULT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
ROLES = ("system", "user", "assistant")
# Placeholder contents for probing the template: what surrounds them is the template's own text.
_PROBE = "\x00{}\x00"


class ChatTemplateError(StartupError):
    """The chat template can't be used with this model; the message names the problem."""


def _raise(message: str) -> None:
    raise TemplateError(message)  # HF templates call raise_exception("...") on bad input


class ChatTemplate:
    """A compiled template, its source file (None: the default) and its turn-ending stops."""

    def __init__(self, source: str, path: Path | None = None):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.filters["tojson"] = lambda v, **kw: json.dumps(v, ensure_ascii=False, **kw)
        self.path = path
        self.name = f"chat template {path}" if path else "the default chat template"
        try:
            self._template = env.from_string(source)
            self.stops = self._stops()
        except TemplateError as e:
            raise ChatTemplateError(f"{self.name}: {e}") from e

    @classmethod
    def load(cls, path: Path | None) -> "ChatTemplate":
        """The template in `path` (a Jinja file or a tokenizer_config.json), or the default."""
        if path is None:
            return cls(DEFAULT_TEMPLATE)
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ChatTemplateError(f"chat template {path}: {e.strerror}") from e
        if Path(path).suffix == ".json":
            template = json.loads(text).get("chat_template")
            if not isinstance(template, str):
                raise ChatTemplateError(f"chat template {path}: no string `chat_template` key")
            text = template
        return cls(text, Path(path))

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The prompt for `messages` (each `{"role", "content"}` with string content)."""
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token="",
            eos_token="",
        )

    def _stops(self) -> tuple[str, ...]:
        """What the template writes between an assistant's reply and the next message's content,
        per role, without trailing spaces: generating that text means the reply is over.
        ("\\nuser:", "\\nsystem:", "\\nassistant:" for the default.)"""
        stops = []
        for role in ROLES:
            text = self.render(
                [
                    {"role": "user", "content": _PROBE.format(0)},
                    {"role": "assistant", "content": _PROBE.format(1)},
                    {"role": role, "content": _PROBE.format(2)},
                ],
                add_generation_prompt=False,
            )
            start, end = text.find(_PROBE.format(1)), text.find(_PROBE.format(2))
            if 0 <= start < end:
                between = text[start + len(_PROBE.format(1)) : end].rstrip(" ")
                if between and between not in stops:
                    stops.append(between)
        return tuple(stops)

    def characters(self) -> set[str]:
        """Every character the template itself writes (for every role, with the prompt)."""
        messages = [{"role": r, "content": _PROBE.format(i)} for i, r in enumerate(ROLES)]
        text = self.render(messages, add_generation_prompt=True)
        for i in range(len(ROLES)):
            text = text.replace(_PROBE.format(i), "")
        return set(text)

    def check_vocabulary(self, char_vocab: frozenset[str] | None) -> None:
        """Refuse a template that writes characters a character-level model does not know."""
        if char_vocab is None:
            return
        unknown = sorted(self.characters() - char_vocab)
        if unknown:
            raise ChatTemplateError(
                f"{self.name} writes characters this character-level model does not "
                f"know: {', '.join(repr(c) for c in unknown)}; edit the template (--chat-template)"
            )
