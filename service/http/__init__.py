"""The HTTP layer: routes (one per registered loss), auth, OpenAPI, metrics, and the one error map.

Routes are thin: read the body, hand it to the :class:`~service.pipeline.Pipeline`, send its parts.
Every exception that reaches this layer is turned into a response by :mod:`~service.http.problems`.
"""
