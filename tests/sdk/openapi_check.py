"""Validates an OpenAPI document read from stdin against the OpenAPI 3.1 specification.

Prints {"valid": true} or {"valid": false, "error": "..."}; the Rust test asserts on it.
"""

import json
import sys

from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError


def main() -> None:
    document = json.load(sys.stdin)
    try:
        validate(document)
    except OpenAPIValidationError as err:
        print(json.dumps({"valid": False, "error": str(err)[:2000]}))
        return
    print(json.dumps({"valid": True, "openapi": document.get("openapi")}))


if __name__ == "__main__":
    main()
