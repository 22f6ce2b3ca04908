"""From a request body to a response body: decode → validate → prepare → submit → render.

* :mod:`~service.pipeline.schemas`: the request and response models, derived from the loss registry.
* :mod:`~service.pipeline.requests`: a validated request as engine work (:class:`~service.pipeline.requests.EngineCall`).
* :mod:`~service.pipeline.render`: an engine result as a response body.
* :mod:`~service.pipeline.pipeline`: the stages in order (:class:`~service.pipeline.pipeline.Pipeline`).
"""

from service.pipeline.pipeline import Pipeline

__all__ = ["Pipeline"]
