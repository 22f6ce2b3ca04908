"""The loss registry: every registered loss is declared consistently with its engine signature."""

from __future__ import annotations

import inspect

import pytest
import torch

import distill
from distill import LOSSES, InputError, Term
from distill.registry import COMMON, Option, TensorInput, register
from distill.rows.prepared import Prepared
from distill.wire import Kind

SPECS = list(LOSSES.values())
IDS = [spec.name for spec in SPECS]


def test_the_three_losses_are_registered():
    assert {"kl_div", "bce", "cross_entropy"} <= set(LOSSES)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_declaration_equals_the_signature(spec):
    parameters = inspect.signature(spec.prepare).parameters
    declared = [tensor.name for tensor in spec.inputs] + [option.name for option in spec.options] + list(COMMON)
    assert sorted(declared) == sorted(parameters)
    assert spec.parameters == tuple(parameters)
    for option in spec.options:
        assert option.default == parameters[option.name].default
    for tensor in spec.inputs:
        assert tensor.required == (parameters[tensor.name].default is inspect.Parameter.empty)
    assert spec.students and spec.reductions


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_public_function_has_the_prepare_signature_and_is_exported(spec):
    assert inspect.signature(spec.compute).parameters == inspect.signature(spec.prepare).parameters
    assert getattr(distill, spec.name) is spec.compute
    assert spec.compute.__doc__ and spec.summary in spec.compute.__doc__


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 5), (7,)])
def test_examples_compute_and_equal_the_prepared_run(spec, shape):
    student = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for example in spec.examples(student):
        arguments = {spec.students[0].name: student, **example}
        result = spec.compute(**arguments)
        prepared = spec.prepare(**arguments)
        assert isinstance(prepared, Prepared) and prepared.loss == spec.name
        again = distill.run(prepared)
        assert torch.equal(result.loss, again.loss) and result.grad is not None and torch.equal(result.grad, again.grad)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_term_factories_follow_the_registry(spec):
    term = getattr(Term, spec.name)(0.25, reduction=spec.option("reduction").default)
    assert term == Term(spec.name, 0.25, {"reduction": spec.option("reduction").default})
    assert spec.name in dir(Term)
    assert "student_logits" not in spec.term_parameters and "mask" not in spec.term_parameters


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_objective_refuses_the_student_and_shared_arguments_per_term(spec):
    student = torch.randn(2, 3)
    for name in (*(tensor.name for tensor in spec.students), *COMMON):
        with pytest.raises(InputError) as error:
            distill.distill(student, [Term(spec.name, 1.0, {name: student})])
        assert error.value.argument == f"terms.0.{name}"


def test_unknown_term_loss_and_attribute():
    with pytest.raises(InputError) as error:
        distill.distill(torch.randn(2, 3), [Term("mse", 1.0, {})])
    assert error.value.argument == "terms.0.loss"
    with pytest.raises(AttributeError):
        Term.mse  # noqa: B018
    with pytest.raises(AttributeError):
        distill.mse  # noqa: B018


def _prepare_probe(
    student_logits: torch.Tensor,
    *,
    teacher_logits: torch.Tensor | None = None,
    scale: float = 1.0,
    reduction: str = "mean",
    mask: torch.Tensor | None = None,
    compute_grad: bool = True,
) -> Prepared:
    raise NotImplementedError


def test_register_refuses_a_declaration_that_differs_from_the_signature():
    student = TensorInput("student_logits", Kind.FLOAT, "student", "s")
    reduction = Option("reduction", "r", choices=("mean",))
    with pytest.raises(TypeError, match="declared"):
        register(_prepare_probe, title="P", summary="s", description="d", inputs=(student,), options=(reduction,), examples=list)
    teacher = TensorInput("teacher_logits", Kind.FLOAT, "target", "t")
    with pytest.raises(TypeError, match="reduction"):
        register(
            _prepare_probe,
            title="P",
            summary="s",
            description="d",
            inputs=(student, teacher),
            options=(Option("scale", "x"), Option("reduction", "r")),
            examples=list,
        )
    assert "_probe" not in LOSSES and "probe" not in LOSSES


def test_register_refuses_a_second_loss_of_the_same_name():
    spec = LOSSES["kl_div"]
    with pytest.raises(ValueError, match="already registered"):
        register(
            spec.prepare,
            title=spec.title,
            summary=spec.summary,
            description=spec.description,
            inputs=spec.inputs,
            options=spec.options,
            examples=spec.examples,
        )
    assert LOSSES["kl_div"] is spec


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_a_student_from_a_graph_is_computed_without_autograd(spec):
    student = torch.randn(3, 4, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    for example in spec.examples(student.detach()):
        result = spec.compute(**{spec.students[0].name: student * 1.0}, **example)
        assert not result.loss.requires_grad and result.grad is not None and not result.grad.requires_grad
