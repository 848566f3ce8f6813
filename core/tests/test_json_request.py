"""JSON bodies are read safely: too deep, invalid or not JSON at all is a 4xx in the one error shape."""

import json

import pytest
from flask import Flask, jsonify, request

from mlstack_core.errors import register_error_handlers
from mlstack_core.json_request import MAX_JSON_DEPTH, JsonProvider, JsonRequest, bracket_depth_exceeds


@pytest.fixture
def client():
    app = Flask(__name__)
    app.request_class = JsonRequest
    app.json = JsonProvider(app)
    register_error_handlers(app)

    @app.post("/echo")
    def echo():
        return jsonify(body=request.get_json())

    @app.get("/args")
    def args():
        return jsonify(args=request.args.to_dict())

    @app.post("/silent")
    def silent():
        return jsonify(body=request.get_json(silent=True))

    return app.test_client()


def _nested(depth: int, opener: str = "[") -> str:
    if opener == "[":
        return "[" * depth + "]" * depth
    return '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)


@pytest.mark.parametrize("opener", ["[", "{"])
def test_nesting_up_to_the_limit_is_parsed(client, opener):
    body = _nested(MAX_JSON_DEPTH, opener)
    response = client.post("/echo", data=body, content_type="application/json")
    assert response.status_code == 200
    assert response.get_json()["body"] == json.loads(body)


@pytest.mark.parametrize(
    "body",
    [
        _nested(MAX_JSON_DEPTH + 1),
        _nested(MAX_JSON_DEPTH + 1, "{"),
        "[" * 100_000,  # the body of issue 10: unbalanced, and far past the decoder's recursion limit
        "{" * 100_000,
        '{"rows": ' + _nested(5000) + "}",
        # Closing brackets inside a string hide the depth from the pre-check: the decoder's RecursionError
        # is answered the same way.
        '["' + "]" * 200_000 + '", ' + "[" * 100_000 + "]" * 100_000 + "]",
    ],
    ids=["limit+1 lists", "limit+1 objects", "100k [", "100k {", "5000 deep rows", "hidden by a string"],
)
@pytest.mark.parametrize("path", ["/echo", "/silent"])
def test_too_deep_is_a_400_even_when_silent(client, body, path):
    response = client.post(path, data=body, content_type="application/json")
    assert response.status_code == 400
    error = response.get_json()
    assert error["error_code"] == "JSON_TOO_DEEP"
    assert str(MAX_JSON_DEPTH) in error["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "Expecting value"),
        (b"{", "line 1 column 2"),
        (b'{"a": 1,}', "Expecting property name"),
        (b'{"pH": "\xff"}', "UTF-8"),
        (b"[" + b"7" * 5000 + b"]", "digits"),
        (b"fixed acidity=7", "Expecting value"),
    ],
)
def test_invalid_json_is_a_400_naming_the_problem(client, body, fragment):
    response = client.post("/echo", data=body, content_type="application/json")
    assert response.status_code == 400
    error = response.get_json()
    assert error["error_code"] == "INVALID_JSON" and fragment in error["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "text/csv", "application/xml", "multipart/form-data", None])
def test_a_body_of_another_type_is_a_415(client, content_type):
    response = client.post("/echo", data=b'{"a": 1}', content_type=content_type)
    assert response.status_code == 415
    assert response.get_json()["error_code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_silent_callers_still_get_none_for_invalid_json(client):
    response = client.post("/silent", data=b"{", content_type="application/json")
    assert response.status_code == 200 and response.get_json() == {"body": None}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", False),
        (b"[]" * 10_000, False),
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, False),
        (b"[" * (MAX_JSON_DEPTH + 1), True),
        (b'{"a": "' + b"{" * 100 + b'"}', True),  # a bracket inside a string counts (see the docstring)
        (b"[" * 3_000_000, True),  # more than one chunk
        ((b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) * 100_000, False),
    ],
)
def test_bracket_depth(data, expected):
    assert bracket_depth_exceeds(data) is expected


def test_a_query_string_that_is_not_utf8_is_a_400(client):
    # WSGI carries the raw query bytes as a Latin-1 string.
    response = client.get("/args", environ_overrides={"QUERY_STRING": "n=\xff"})
    assert response.status_code == 400
    assert response.get_json()["error_code"] == "INVALID_QUERY"
    # Percent-encoded, the same byte is Werkzeug's business and reads as text.
    encoded = client.get("/args", environ_overrides={"QUERY_STRING": "n=%FF&m=%C2%B2"})
    assert encoded.get_json() == {"args": {"n": "%FF", "m": "\u00b2"}}


# Bodies orjson refuses or reads otherwise than the standard library, and ordinary ones.
PROVIDER_BODIES = [
    b'{"alcohol": 9.4, "pH": 3.51, "rows": [1, 2.5, -0.0, 1.5e-320, true, null, "\xc3\xa9"]}',
    b'{"a": 1, "a": 2}', b'\xef\xbb\xbf{"a": 1}', b'{"a": NaN}', b'[-Infinity]', b'{"a": 1e400}', b'"\\ud800"',
    b"[" + b"7" * 5000 + b"]", b"[-" + b"9" * 400 + b"]", '{"a": [1, 2]}'.encode("utf-16"), b"[1,]", b"{'a': 1}",
    b"", b"\xff\xfe\x00", b'"\x7f"', b"9007199254740993",
]


def _outcome(parse, body: bytes):
    try:
        return ("ok", repr(parse(body)))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        return ("error", type(exc).__name__)


@pytest.mark.parametrize("body", PROVIDER_BODIES, ids=range(len(PROVIDER_BODIES)))
def test_the_provider_parses_and_fails_exactly_as_the_standard_library(body):
    provider = JsonProvider(Flask(__name__))
    assert _outcome(provider.loads, body) == _outcome(json.loads, body)


def test_an_integer_beyond_64_bits_comes_back_as_the_nearest_float():
    provider = JsonProvider(Flask(__name__))
    assert provider.loads(b"[12345678901234567890123]") == [float(12345678901234567890123)]
    assert provider.loads("[1]") == [1] and isinstance(provider.loads("[1]")[0], int)
