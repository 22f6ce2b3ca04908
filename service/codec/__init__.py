"""The wire format of the service: bytes in, tensors and documents out, and back again.

* :mod:`~service.codec.body`: reading a body under the size limit, parsing it into a document.
* :mod:`~service.codec.json_reader`: the compiled reader that cuts tensors out of JSON bodies.
* :mod:`~service.codec.tensors`: tensor fields decoded (nested lists or base64) and encoded.
* :mod:`~service.codec.parts`: responses in parts, base64 payloads never copied into the JSON text.
* :mod:`~service.codec.pool`: the threads that decode and encode, encoding first.

The binary tensor format itself is :mod:`distill.wire`, shared with the Python client.
"""
