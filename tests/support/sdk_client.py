"""`python sdk_client.py BASE_URL`: drive a nanoserve with whichever `openai` SDK this
interpreter has (1.0 to 3.x) and print what came back as one JSON object, for
tests/e2e/test_sdk_versions.py to check. Only calls every 1.x release has; newer request fields go
through `extra_body`, as an old client would send them."""

import json
import sys

import openai

MODEL = "shakespeare_char"
MESSAGES = [{"role": "user", "content": "Speak of the night."}]


def _error_param(call) -> str | None:
    try:
        call()
    except openai.BadRequestError as e:
        return e.response.json()["error"]["param"]  # 1.0's error has no `.body` yet
    return None


def main(base_url: str) -> dict:
    c = openai.OpenAI(base_url=base_url + "/v1", api_key="sdk-test", max_retries=0, timeout=120)
    greedy = {"model": MODEL, "max_tokens": 20, "temperature": 0}
    out: dict = {"version": openai.__version__}
    out["models"] = [m.id for m in c.models.list().data]
    r = c.completions.create(prompt="ROMEO:", **greedy)
    out["completion"] = r.choices[0].text
    out["completion_tokens"] = r.usage.completion_tokens
    stream = c.completions.create(prompt="ROMEO:", stream=True, **greedy)
    out["completion_stream"] = "".join(ch.choices[0].text for ch in stream if ch.choices)
    r = c.chat.completions.create(messages=MESSAGES, **greedy)
    out["chat"] = r.choices[0].message.content
    out["chat_role"] = r.choices[0].message.role
    out["chat_tokens"] = r.usage.completion_tokens
    usage = {"stream_options": {"include_usage": True}}
    chunks = list(
        c.chat.completions.create(messages=MESSAGES, stream=True, extra_body=usage, **greedy)
    )
    out["chat_stream"] = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    out["chat_stream_role"] = chunks[0].choices[0].delta.role
    usage = getattr(chunks[-1], "usage", None)  # 1.0 does not know the field: a plain dict
    out["chat_stream_usage"] = (
        usage["completion_tokens"] if isinstance(usage, dict) else (usage.completion_tokens)
    )
    tools = {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}
    out["tools_error_param"] = _error_param(
        lambda: c.chat.completions.create(messages=MESSAGES, extra_body=tools, **greedy)
    )
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
