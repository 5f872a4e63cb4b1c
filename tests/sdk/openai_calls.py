"""Chat completions with the official `openai` SDK; see common.py for input and output."""

import openai

import common


def client(call) -> openai.OpenAI:
    # What an application changes to use the gateway: base_url, and a proxy key as api_key.
    return openai.OpenAI(base_url=call["base_url"], api_key=call["api_key"], max_retries=0, timeout=60)


def messages():
    return [{"role": "user", "content": "hi"}]


def plain(call) -> str:
    answer = client(call).chat.completions.create(model=call["model"], messages=messages())
    return answer.choices[0].message.content


def stream(call) -> list:
    pieces = []
    with client(call).chat.completions.create(model=call["model"], messages=messages(), stream=True) as chunks:
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
    return pieces


def describe(err) -> dict:
    if not isinstance(err, openai.APIStatusError):
        return {"class": common.public_name(err, openai)}
    body = err.body if isinstance(err.body, dict) else {}
    return {
        "class": common.public_name(err, openai),
        "status": err.status_code,
        "message": body.get("message"),
        "type": err.type,
        "code": err.code,
        "retry_after": common.header(err, "retry-after"),
    }


if __name__ == "__main__":
    common.run("openai", openai.__version__, plain, stream, describe)
