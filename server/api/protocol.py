"""Wire models: the OpenAI Completions request/response and the legacy /generate contract.

Fields follow OpenAI's order, each with its bounds and a description (they are the /docs page and
the OpenAPI schema the fuzz test generates requests from). Types are strict (a `"1"` is not an
int, a `true` is not a number) so a client bug is reported instead of guessed at. Every number
is bounded here to what the engine accepts: an unbounded int reaching vLLM is a 500 (seed 2**64
overflows torch's generator), and the SDK retries a 500 three times. Limits that depend on the
server's settings (n, logprobs, prompt count) or on the model (context length, vocabulary) are
checked in `prepare.py`, which knows both.
"""

import logging
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

log = logging.getLogger("nanoserve.protocol")

INT32_MAX = 2**31 - 1  # vLLM keeps token counts and ids in int32 tensors
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # torch.Generator.manual_seed's signed range
MAX_STOP_SEQUENCES = 4  # OpenAI's cap on a `stop` list

TokenId = Annotated[StrictInt, Field(ge=0, le=INT32_MAX)]
TokenIds = list[TokenId]
Prompt = StrictStr | list[StrictStr] | TokenIds | list[TokenIds]
# One string is one stop sequence; only a list is capped (a 4-item cap on a string's characters
# would refuse "\n\nJULIET:").
Stop = StrictStr | Annotated[list[StrictStr], Field(max_length=MAX_STOP_SEQUENCES)]
Bias = Annotated[float, Field(ge=-100.0, le=100.0)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = Field(
        False, description="Send one last chunk with the usage (and empty `choices`)."
    )


# JSON has one number type: strict mode would refuse `1` for a float field, so ints are let in.
_FLOAT_FIELDS = (
    "temperature",
    "top_p",
    "min_p",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
)


def _number(v: Any) -> Any:
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


def ints_are_numbers(cls, data: Any) -> Any:
    """A model validator (mode="before"): JSON ints in the float fields become floats."""
    if isinstance(data, dict):
        for key in _FLOAT_FIELDS:
            if key in data:
                data[key] = _number(data[key])
        if isinstance(data.get("logit_bias"), dict):
            data["logit_bias"] = {k: _number(v) for k, v in data["logit_bias"].items()}
    return data


class SamplingExtras(BaseModel):
    """vLLM's sampling parameters beyond OpenAI's (openai SDK: extra_body={...}), shared by
    completions and chat."""

    top_k: StrictInt | None = Field(
        None, ge=-1, le=INT32_MAX, description="Sample from the k likeliest tokens; -1 or 0: off."
    )
    min_p: float = Field(
        0.0, ge=0.0, le=1.0, description="Drop tokens below this share of the likeliest one."
    )
    repetition_penalty: float = Field(
        1.0, gt=0.0, le=2.0, description="Multiplicative penalty on repeated tokens; 1: off."
    )
    min_tokens: StrictInt = Field(
        0, ge=0, le=INT32_MAX, description="Generate at least this many before stopping."
    )
    ignore_eos: StrictBool = Field(False, description="Keep going past the end-of-text token.")
    stop_token_ids: list[TokenId] | None = Field(
        None, max_length=64, description="Token ids that end a choice."
    )


class CompletionRequest(SamplingExtras):
    """POST /v1/completions. Unknown fields are accepted and ignored (logged at debug)."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    model: StrictStr = Field(description="The served model's name (see GET /v1/models).")
    prompt: Prompt = Field(
        description="A string, a list of strings, a list of token ids, or a list of those."
    )
    best_of: StrictInt | None = Field(
        None, ge=1, le=INT32_MAX, description="Accepted only equal to `n` (no server-side ranking)."
    )
    echo: StrictBool = Field(False, description="Return the prompt in front of the completion.")
    frequency_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Penalise tokens by how often they appeared so far."
    )
    logit_bias: dict[str, Bias] | None = Field(
        None, description="Token id (as a string) -> bias in [-100, 100] added to its logit."
    )
    logprobs: StrictInt | None = Field(
        None,
        ge=0,
        le=20,
        description="Return the log-probabilities of the chosen and this many top tokens "
        "(the server's --max-logprobs caps it further).",
    )
    max_tokens: StrictInt | None = Field(
        16,
        ge=0,
        le=INT32_MAX,
        description="Tokens to generate; null: as many as fit in the context; 0 only with echo.",
    )
    n: StrictInt = Field(
        1, ge=1, le=INT32_MAX, description="Choices per prompt (the server's --max-n caps it)."
    )
    presence_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Penalise tokens that appeared at all so far."
    )
    seed: StrictInt | None = Field(
        None, ge=INT64_MIN, le=INT64_MAX, description="Seed for reproducible sampling."
    )
    stop: Stop | None = Field(
        None, description="A stop sequence, or a list of up to 4; not included in the text."
    )
    stream: StrictBool = Field(False, description="Send server-sent events as tokens arrive.")
    stream_options: StreamOptions | None = Field(None, description="Only with `stream`.")
    suffix: StrictStr | None = Field(
        None, description="Refused: these models have no fill-in-the-middle."
    )
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 is greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    user: StrictStr | None = Field(None, description="End-user id, for your own records.")
    crop_context: StrictBool = Field(
        False,
        description="Generate past the context window as nanoGPT's generate() does: before each "
        "new token, keep only the last max_model_len tokens (the prompt too). n=1, no stop "
        "strings or penalties. Off: prompt + max_tokens beyond the window is a 400.",
    )

    _ints_are_numbers = model_validator(mode="before")(classmethod(ints_are_numbers))

    @model_validator(mode="after")
    def _log_unknown(self) -> "CompletionRequest":
        if self.model_extra:
            log.debug("ignoring unknown completion fields: %s", sorted(self.model_extra))
        return self

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class Logprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class Choice(BaseModel):
    index: int
    text: str
    logprobs: Logprobs | None = None
    finish_reason: str | None = None


class CompletionUsage(BaseModel):
    """The `usage` object of a response (OpenAI's name for it)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    # the version of the weights that answered (`iter2000-1a2b3c4d`): OpenAI's field for it
    system_fingerprint: str | None = None
    choices: list[Choice]
    usage: CompletionUsage | None = None


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "nanoserve"
    max_model_len: int
    # nanoserve's: the version answering now (the answers' system_fingerprint) and the model's
    # state: ready, reloading, or "failed: <why>" (its last reload; the version above serves on)
    version: str | None = None
    status: str = "ready"


class VersionCard(BaseModel):
    id: str
    iter_num: int | None = None  # nanoGPT's iteration and best validation loss, if recorded
    best_val_loss: float | None = None
    loaded_at: int


class ModelDetail(ModelCard):
    """/v1/models/{id}: the card, the versions kept on disk (oldest first, the current one
    last) and the last reload's error (null once a reload succeeded)."""

    versions: list[VersionCard] = []
    last_error: str | None = None


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


class LegacyRequest(BaseModel):
    """POST /generate, as the seed server defined it (defaults included)."""

    model_config = ConfigDict(allow_inf_nan=False)

    prompt: str = Field(min_length=1, description="Text to continue.")
    max_tokens: int = Field(100, ge=1, le=INT32_MAX, description="Tokens to generate.")
    temperature: float = Field(0.8, ge=0.0, le=100.0, description="0 is greedy.")
    top_k: int | None = Field(
        200, ge=1, le=INT32_MAX, description="Sample from the k likeliest tokens; null: off."
    )


class LegacyResponse(BaseModel):
    text: str = Field(description="The prompt followed by the generated text.")
    tokens_generated: int
