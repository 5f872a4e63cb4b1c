"""Messages with the official `anthropic` SDK; see common.py for input and output."""

import anthropic

import common


def client(call) -> anthropic.Anthropic:
    # What an application changes to use the gateway: base_url, and a proxy key as api_key.
    return anthropic.Anthropic(base_url=call["base_url"], api_key=call["api_key"], max_retries=0, timeout=60)


def request(call) -> dict:
    return {"model": call["model"], "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def plain(call) -> str:
    message = client(call).messages.create(**request(call))
    return "".join(block.text for block in message.content if block.type == "text")


def stream(call) -> list:
    with client(call).messages.stream(**request(call)) as events:
        pieces = list(events.text_stream)
        final = events.get_final_message()
    if final.stop_reason != "end_turn":
        raise RuntimeError(f"the stream ended with stop_reason {final.stop_reason!r}")
    return pieces


def describe(err) -> dict:
    if not isinstance(err, anthropic.APIStatusError):
        return {"class": common.public_name(err, anthropic)}
    body = err.body if isinstance(err.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    return {
        "class": common.public_name(err, anthropic),
        "status": err.status_code,
        "message": error.get("message"),
        "type": error.get("type"),
        "envelope": body.get("type"),
        "retry_after": common.header(err, "retry-after"),
    }


if __name__ == "__main__":
    common.run("anthropic", anthropic.__version__, plain, stream, describe)
