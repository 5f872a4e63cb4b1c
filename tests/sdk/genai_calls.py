"""generate_content with the official `google-genai` SDK; see common.py for input and output."""

from google import genai
from google.genai import errors, types

import common


def client(call) -> genai.Client:
    # What an application changes to use the gateway: http_options.base_url (the SDK appends
    # the API version and `models/...`), and a proxy key as api_key. One attempt, no retries.
    options = types.HttpOptions(
        base_url=call["base_url"],
        timeout=60_000,
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    return genai.Client(api_key=call["api_key"], http_options=options)


# The client closes its HTTP connection pool when it is garbage-collected: keep it referenced
# until the answer has been read.


def plain(call) -> str:
    sdk = client(call)
    return sdk.models.generate_content(model=call["model"], contents="hi").text


def stream(call) -> list:
    sdk = client(call)
    chunks = sdk.models.generate_content_stream(model=call["model"], contents="hi")
    return [chunk.text for chunk in chunks if chunk.text]


def describe(err) -> dict:
    if not isinstance(err, errors.APIError):
        return {"class": common.public_name(err, errors)}
    return {
        "class": common.public_name(err, errors),
        "status": err.code,
        "message": err.message,
        "type": err.status,
        "retry_after": common.header(err, "retry-after"),
    }


if __name__ == "__main__":
    common.run("google-genai", genai.__version__, plain, stream, describe)
