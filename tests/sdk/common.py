"""What the three SDK scripts share: read the call list, run each call, print one JSON result.

A script reads a JSON document on stdin:

    {"calls": [{"base_url": "...", "api_key": "...", "model": "...", "stream": false}, ...]}

and prints one JSON document on stdout:

    {"sdk": "openai", "version": "1.2.3", "results": [RESULT, ...]}

with one RESULT per call, in order: `{"ok": true, "text": "...", "chunks": N}` (`chunks` is the
number of streamed pieces that carried text, 1 for a plain call) or `{"ok": false, "error":
{"class": "openai.AuthenticationError", "status": 401, "message": "...", "type": "...", ...}}`.
Every call is made with the SDK's retries off, so one call is one HTTP request.
"""

import json
import sys
import traceback


def public_name(err: BaseException, *modules) -> str:
    """`module.Class` as an application would write it, e.g. `openai.RateLimitError`."""
    cls = type(err)
    for module in modules:
        if getattr(module, cls.__name__, None) is cls:
            return f"{module.__name__}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def run(sdk: str, version: str, plain, stream, describe) -> None:
    """Runs every call of the spec on stdin; `plain(call)` returns the answer's text,
    `stream(call)` the list of streamed text pieces, `describe(err)` the error's fields."""
    spec = json.load(sys.stdin)
    results = []
    for call in spec["calls"]:
        try:
            if call.get("stream"):
                pieces = stream(call)
                results.append({"ok": True, "text": "".join(pieces), "chunks": len(pieces)})
            else:
                results.append({"ok": True, "text": plain(call), "chunks": 1})
        except Exception as err:  # reported to the Rust test, which asserts on it
            error = {"class": type(err).__module__ + "." + type(err).__qualname__, "repr": repr(err)}
            try:
                error.update(describe(err))
            except Exception:
                error["describe_failed"] = traceback.format_exc()
            results.append({"ok": False, "error": error})
    json.dump({"sdk": sdk, "version": version, "results": results}, sys.stdout)
    sys.stdout.write("\n")


def header(err, name: str):
    """A header of the error's HTTP response, if the error carries one."""
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
    return None if headers is None else headers.get(name)
