"""Wire model of POST /v1/chat/completions (OpenAI Chat Completions), for base models.

Fields follow OpenAI's order with the same bounds as /v1/completions (see protocol.py for why
every number is bounded). What a base model behind a text template cannot do — tools, JSON
modes, audio, images — is accepted by the schema and refused by `chat.py` with a 400 naming
the parameter, rather than ignored: a client relying on it must hear so.
"""

from typing import Any, Literal

from nanoserve.server.api.protocol import (
    INT32_MAX,
    INT64_MAX,
    INT64_MIN,
    Bias,
    SamplingExtras,
    Stop,
    StreamOptions,
    ints_are_numbers,
)
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

# "developer" is OpenAI's newer name for "system"; tool/function messages need tools.
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ContentPart(BaseModel):
    """One part of a message's content; only `text` parts can be served."""

    model_config = ConfigDict(extra="allow")
    type: StrictStr = Field(description='"text" (image, audio and file parts are refused).')
    text: StrictStr | None = Field(None, description="The text of a `text` part.")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role = Field(description="system (or developer), user or assistant.")
    content: StrictStr | list[ContentPart] | None = Field(
        None, description="A string, or a list of text parts (joined in order)."
    )
    name: StrictStr | None = Field(None, description="Accepted and not shown to the model.")


class ChatCompletionRequest(SamplingExtras):
    """POST /v1/chat/completions. Unknown fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    messages: list[ChatMessage] = Field(
        min_length=1, description="The conversation so far, oldest first."
    )
    model: StrictStr = Field(description="The served model's name (see GET /v1/models).")
    audio: Any = Field(None, description="Refused: text only.")
    frequency_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Penalise tokens by how often they appeared so far."
    )
    logit_bias: dict[str, Bias] | None = Field(
        None, description="Token id (as a string) -> bias in [-100, 100] added to its logit."
    )
    logprobs: StrictBool = Field(
        False, description="Return the log-probability of each token of the reply."
    )
    max_completion_tokens: StrictInt | None = Field(
        None, ge=1, le=INT32_MAX, description="Tokens to generate at most (null: as fit)."
    )
    max_tokens: StrictInt | None = Field(
        None, ge=1, le=INT32_MAX, description="Deprecated spelling of max_completion_tokens."
    )
    modalities: list[StrictStr] | None = Field(None, description='Only ["text"].')
    n: StrictInt = Field(
        1, ge=1, le=INT32_MAX, description="Choices to generate (the server's --max-n caps it)."
    )
    presence_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Penalise tokens that appeared at all so far."
    )
    response_format: dict[str, Any] | None = Field(
        None, description='Only {"type": "text"}: no JSON mode for a base model.'
    )
    seed: StrictInt | None = Field(
        None, ge=INT64_MIN, le=INT64_MAX, description="Seed for reproducible sampling."
    )
    stop: Stop | None = Field(
        None,
        description="A stop sequence, or a list of up to 4 (the template's turn ends are "
        "added to them); not included in the reply.",
    )
    stream: StrictBool = Field(False, description="Send server-sent events as tokens arrive.")
    stream_options: StreamOptions | None = Field(None, description="Only with `stream`.")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 is greedy.")
    tool_choice: Any = Field(None, description='Refused unless "none": no tool calling.')
    tools: list[Any] | None = Field(None, description="Refused: no tool calling.")
    top_logprobs: StrictInt | None = Field(
        None, ge=0, le=20, description="With logprobs: this many alternatives per token."
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    user: StrictStr | None = Field(None, description="End-user id, for your own records.")
    _ints_are_numbers = model_validator(mode="before")(classmethod(ints_are_numbers))
