"""The baseline the HTTP benchmark compares against: a plain FastAPI endpoint with autograd.

A ``def`` route taking a pydantic model with ``list[list[float]]`` fields, computing the KL loss with
torch autograd and returning a dict of ``.tolist()`` values, as most hand-written services do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class KLRequest(BaseModel):
    student_logits: list[list[float]]
    teacher_logits: list[list[float]]
    temperature: float = 1.0


@app.post("/kl_div")
def kl_div(request: KLRequest) -> dict:
    student = torch.tensor(request.student_logits, requires_grad=True)
    teacher = torch.tensor(request.teacher_logits)
    T = request.temperature
    loss = F.kl_div(F.log_softmax(student / T, -1), F.softmax(teacher / T, -1), reduction="batchmean") * T * T
    loss.backward()
    return {"loss": loss.item(), "grad": student.grad.tolist()}
