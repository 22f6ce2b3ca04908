"""The request and term schemas are the engine's parameters, for every registered loss.

This is the rule the registry exists for: a loss's request fields are exactly its engine function's
keywords (plus the two wire fields) with the same defaults, its term fields are the keywords a term
sets (plus ``loss`` and ``coefficient``), and the route answers what the engine answers in process.
"""

from __future__ import annotations

import inspect
import typing

import pytest
import torch
from pydantic import ValidationError

from distill import LOSSES, wire
from service.pipeline.schemas import REQUESTS, TERMS, Encodings
from service.pipeline.tensor_schemas import Dtype, FloatDtype
from tests.service.conftest import binary, from_binary
from tests.tolerances import assert_close

SPECS = list(LOSSES.values())
IDS = [spec.name for spec in SPECS]
WIRE_FIELDS = set(Encodings.model_fields)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_request_fields_equal_the_engine_parameters(spec):
    model = REQUESTS[spec.name]
    assert model.__name__ == f"{spec.title}Request"
    parameters = inspect.signature(spec.prepare).parameters
    assert set(model.model_fields) == set(parameters) | WIRE_FIELDS
    for name, parameter in parameters.items():
        field = model.model_fields[name]
        if parameter.default is inspect.Parameter.empty:
            assert field.is_required(), name
        else:
            assert field.default == parameter.default, name


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_term_fields_equal_the_term_parameters(spec):
    model = TERMS[spec.name]
    assert model.__name__ == f"{spec.title}Term"
    assert set(model.model_fields) == set(spec.term_parameters) | {"loss", "coefficient", "student"}
    reductions = typing.get_args(model.model_fields["reduction"].annotation)
    assert set(reductions) == set(spec.reductions) - {"none"}


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_option_ranges_are_enforced_by_the_schema(spec):
    for option in spec.options:
        for bound, outside in (("gt", 0.0), ("ge", -1e-3), ("le", 1e-3)):
            limit = getattr(option, bound)
            if limit is None:
                continue
            with pytest.raises(ValidationError) as error:
                REQUESTS[spec.name].model_validate({option.name: limit + outside})
            assert option.name in {item["loc"][0] for item in error.value.errors()}, (option.name, bound)


def test_dtype_names_are_the_wire_table():
    assert list(typing.get_args(Dtype.__value__)) == list(wire.DTYPES)
    assert set(typing.get_args(FloatDtype.__value__)) == set(wire.Kind.FLOAT.dtypes)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_loss_is_served_as_the_engine_computes_it(client, spec):
    student = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    for example in spec.examples(student):
        expected = spec.compute(**{spec.students[0].name: student}, **example)
        body = {spec.students[0].name: binary(student)}
        body |= {name: binary(value) if isinstance(value, torch.Tensor) else value for name, value in example.items()}
        response = client.post(f"/v1/{spec.name}", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
        assert_close(from_binary(answer["grad"]), expected.grad, torch.float32)


def test_info_and_routes_list_every_loss(client):
    assert client.get("/v1/info").json()["losses"] == [*LOSSES, "distill"]
    paths = client.get("/openapi.json").json()["paths"]
    assert {f"/v1/{name}" for name in LOSSES} | {"/v1/distill"} <= set(paths)
