// openapi-fetch over the types openapi-typescript generates from distill's spec (no generated runtime code):
// a KL divergence with tensors as JSON values (reduced, and per element), a cross-entropy with a binary (base64) student and gradient,
// the combined objective, and a 422 problem. Prints what the server answered, as JSON, for the test to check.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

type FloatTensor = components["schemas"]["FloatTensor"];
type Loss = components["schemas"]["Loss"];

const STUDENT = [0.5, -1.0, 2.0, 0.0, 1.5, 0.25, -0.75, 3.0];
const TEACHER = [1.0, 0.0, -1.0, 2.0, 0.5, 0.5, 2.5, -0.5];
const SHAPE = [2, 4];

function floats(tensor: FloatTensor | null | undefined): number[] {
  if (tensor == null) throw new Error("no gradient in the answer");
  if (tensor.values !== undefined) return tensor.values;
  const bytes = Buffer.from(tensor.data as string, "base64");
  return Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4));
}

function scalar(loss: Loss): number {
  if (typeof loss !== "number") throw new Error("expected a reduced loss");
  return loss;
}

async function main(): Promise<void> {
  const client = createClient<paths>({ baseUrl: process.argv[2] });
  const kl = await client.POST("/v1/kl_div", {
    body: { student_logits: { shape: SHAPE, values: STUDENT }, teacher_logits: { shape: SHAPE, values: TEACHER }, temperature: 2.0 },
  });
  const perElement = await client.POST("/v1/kl_div", {
    body: {
      student_logits: { shape: SHAPE, values: STUDENT },
      teacher_logits: { shape: SHAPE, values: TEACHER },
      temperature: 2.0,
      reduction: "none",
    },
  });
  const ce = await client.POST("/v1/cross_entropy", {
    body: {
      student_logits: { shape: SHAPE, dtype: "float32", data: Buffer.from(new Float32Array(STUDENT).buffer).toString("base64") },
      labels: { shape: [2], values: [2, 0] },
    },
  });
  const objective = await client.POST("/v1/distill", {
    body: {
      student_logits: { shape: SHAPE, values: STUDENT },
      terms: [
        { loss: "kl_div", coefficient: 0.5, teacher_logits: { shape: SHAPE, values: TEACHER }, temperature: 2.0 },
        { loss: "cross_entropy", labels: { shape: [2], values: [2, 0] } },
      ],
    },
  });
  const bad = await client.POST("/v1/cross_entropy", {
    body: { student_logits: { shape: SHAPE, values: STUDENT }, labels: { shape: [2], values: [2, 9] } },
  });
  if (kl.data === undefined || perElement.data === undefined || ce.data === undefined || objective.data === undefined) {
    throw new Error(JSON.stringify([kl.error, perElement.error, ce.error, objective.error]));
  }
  const elements = perElement.data.loss;
  if (typeof elements === "number") throw new Error("expected the per-element loss as a tensor");
  console.log(
    JSON.stringify({
      kl_div: { loss: scalar(kl.data.loss), grad: floats(kl.data.grad) },
      kl_div_none: { loss: floats(elements), grad: floats(perElement.data.grad) },
      cross_entropy: { loss: scalar(ce.data.loss), grad: floats(ce.data.grad) },
      distill: { loss: objective.data.loss, grad: floats(objective.data.grad), terms: objective.data.terms.map((term) => scalar(term.loss)) },
      problem: { status: bad.error?.status, field: bad.error?.field },
    }),
  );
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
