"""POST /tokenize and POST /detokenize, in the shapes vLLM's server uses.

`{"prompt": "..."}` or `{"messages": [...]}` (rendered by the chat template, as
/v1/chat/completions would) -> `{"tokens", "count", "max_model_len", "token_strs"}`;
`{"tokens": [...]}` -> `{"prompt"}`. For a character-level model this is how a user sees that one
character is one token. Authenticated like every route (the guard sees every path).
"""

from fastapi import APIRouter, Request
from nanoserve.server.api.chat_protocol import ChatCompletionRequest, ChatMessage
from nanoserve.server.api.openai import service_of
from nanoserve.server.api.protocol import TokenId
from nanoserve.server.serving.chat import render
from nanoserve.server.serving.prepare import check_model, check_token_ids, known_characters
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, model_validator

router = APIRouter()


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: StrictStr | None = Field(None, description="The served model's name, if given.")
    prompt: StrictStr | None = Field(None, description="Text to tokenize (or give `messages`).")
    messages: list[ChatMessage] | None = Field(
        None, min_length=1, description="A conversation, tokenized as the chat template renders it."
    )
    add_generation_prompt: StrictBool = Field(
        True, description="With messages: end with the assistant's prefix."
    )
    return_token_strs: StrictBool = Field(False, description="Also return each token's text.")

    @model_validator(mode="after")
    def _one_input(self) -> "TokenizeRequest":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' and 'messages'")
        return self


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: StrictStr | None = Field(None, description="The served model's name, if given.")
    tokens: list[TokenId] = Field(max_length=1_000_000, description="Token ids to turn into text.")


class DetokenizeResponse(BaseModel):
    prompt: str


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    """The token ids of a prompt, or of a conversation as the chat template renders it."""
    service = service_of(request)
    engine = service.engine
    check_model(body.model, engine.info, service.settings)
    if body.messages is not None:
        chat = ChatCompletionRequest.model_construct(messages=body.messages)
        text, param = render(chat, service.chat_template, body.add_generation_prompt), "messages"
    else:
        text, param = body.prompt or "", "prompt"
    known_characters(text, engine.info, param, "The text")
    ids = engine.encode(text) if text else []
    strs = [engine.decode([t]) for t in ids] if body.return_token_strs else None
    return TokenizeResponse(
        count=len(ids), max_model_len=engine.info.max_model_len, tokens=ids, token_strs=strs
    )


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    """The text of a list of token ids."""
    service = service_of(request)
    engine = service.engine
    check_model(body.model, engine.info, service.settings)
    check_token_ids(body.tokens, engine.info, "tokens")
    return DetokenizeResponse(prompt=engine.decode(body.tokens))
