import base64

import pytest

from distill import native
from service.codec import json_reader
from service.codec.body import parse_json_object
from service.errors import MalformedBody


@pytest.mark.skipif(not json_reader.enabled(), reason="the compiled JSON reader is not built")
def test_a_body_whose_numbers_are_all_parsed_is_let_go():
    body = bytearray(b'{"student_logits": [[1.0, 2.0]], "temperature": 2.0}')
    document = parse_json_object(body)
    assert body == b"" and document["temperature"] == 2.0
    assert document["student_logits"].floats().tolist() == [[1.0, 2.0]]


def test_a_body_still_read_in_place_is_kept():
    data = base64.b64encode(b"\0" * 1024).decode()
    text = f'{{"student_logits": {{"dtype": "float32", "shape": [256], "data": "{data}"}}}}'.encode()
    body = bytearray(text)
    parse_json_object(body)
    assert body == text  # the base64 payload is decoded from the body itself, later


def test_a_body_without_extracted_tensors_is_kept():
    with native.switched(False):
        body = bytearray(b'{"student_logits": [[1.0, 2.0]]}')
        parse_json_object(body)
        assert body == b'{"student_logits": [[1.0, 2.0]]}'


@pytest.mark.parametrize("body", [bytearray(), bytearray(b" \n\t "), b""])
def test_an_empty_body_is_malformed(body):
    with pytest.raises(MalformedBody):
        parse_json_object(body)
