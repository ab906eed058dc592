"""Wire models: the OpenAI Completions request/response and the legacy /generate contract.

Fields follow OpenAI's order. Types are strict (a `"1"` is not an int, a `true` is not a number)
so a client bug is reported instead of guessed at. Limits that depend on the server's settings
(n, logprobs, prompt count) and on the model (context length, vocabulary) are checked in
`completions.py`, which knows both.
"""

import logging
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

log = logging.getLogger("nanoserve.protocol")

TokenIds = list[StrictInt]
Prompt = StrictStr | list[StrictStr] | TokenIds | list[TokenIds]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class CompletionRequest(BaseModel):
    """POST /v1/completions. Unknown fields are accepted and ignored (logged at debug)."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: StrictStr
    prompt: Prompt
    best_of: StrictInt | None = None
    echo: StrictBool = False
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    logprobs: StrictInt | None = Field(None, ge=0)
    max_tokens: StrictInt | None = Field(16, ge=0)
    n: StrictInt = Field(1, ge=1)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = Field(None, max_length=4)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    suffix: StrictStr | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    user: StrictStr | None = None
    # vLLM's sampling extras (openai SDK: extra_body={...})
    top_k: StrictInt | None = Field(None, ge=-1)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=2.0)
    min_tokens: StrictInt = Field(0, ge=0)
    ignore_eos: StrictBool = False
    stop_token_ids: list[StrictInt] | None = None

    @model_validator(mode="before")
    @classmethod
    def _ints_are_numbers(cls, data: Any) -> Any:
        # strict mode refuses ints for float fields; JSON has one number type, so allow them.
        if isinstance(data, dict):
            for key in (
                "temperature",
                "top_p",
                "min_p",
                "repetition_penalty",
                "frequency_penalty",
                "presence_penalty",
            ):
                v = data.get(key)
                if isinstance(v, int) and not isinstance(v, bool):
                    data[key] = float(v)
            if isinstance(data.get("logit_bias"), dict):
                data["logit_bias"] = {
                    k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                    for k, v in data["logit_bias"].items()
                }
        return data

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


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "nanoserve"
    max_model_len: int


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


class GenerateRequest(BaseModel):
    """Legacy POST /generate, as the seed server defined it (defaults included)."""

    prompt: Annotated[str, Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] = 100
    temperature: Annotated[float, Field(ge=0.0)] = 0.8
    top_k: Annotated[int | None, Field(ge=1)] = 200


class GenerateResponse(BaseModel):
    text: str
    tokens_generated: int
