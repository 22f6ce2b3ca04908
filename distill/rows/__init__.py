"""The row machinery every loss is built on.

* :mod:`~distill.rows.layout`: flattening into (rows, classes), row masks, chunks, shape checks.
* :mod:`~distill.rows.checks`: value checks of logits, probabilities and log-probabilities.
* :mod:`~distill.rows.teacher`: the teacher's three forms (logits, probabilities, log-probabilities).
* :mod:`~distill.rows.softmax`: softmax and log-sum-exp from one pass.
* :mod:`~distill.rows.kernel`: the chunked driver that runs a loss kernel over the kept rows.
* :mod:`~distill.rows.reduction`: reductions, normalisers, and the final :class:`~distill.result.LossResult`.
* :mod:`~distill.rows.prepared`: a validated request (:class:`~distill.rows.prepared.Prepared`) and running it.
"""
