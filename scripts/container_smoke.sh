#!/usr/bin/env bash
# Build the CPU image with podman, run it, wait for health, call /v1/kl_div, check the answer and that
# the compiled code is in use (/v1/info), clean up.
#
# For machines without a Docker engine or registry access to base images (podman, runc and
# mmdebstrap installed): a stand-in for the FROM image is made locally with mmdebstrap and tagged
# with the name the Dockerfile uses; pip inside the build reaches the package index through the
# host network and CA bundle. TORCH_FIND_LINKS (a directory holding a CPU torch wheel, mounted into
# the build) stands in for the PyTorch CPU index.
#
#   scripts/container_smoke.sh            (env: TORCH_WHEELS=/opt/wheels TORCH_SPEC=torch==2.13.0 PORT=18080)
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=python:3.11-slim-bookworm
IMAGE=localhost/distill:smoke
NAME=distill-smoke
PORT=${PORT:-18080}
TORCH_WHEELS=${TORCH_WHEELS:-/opt/wheels}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
CA=/etc/ssl/certs/ca-certificates.crt
PYTHON=${PYTHON:-.venv/bin/python}

cleanup() { podman rm -f "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT

if ! podman image exists "$BASE_IMAGE"; then
    echo "== making a stand-in for $BASE_IMAGE with mmdebstrap"
    rootfs=$(mktemp -d)/rootfs.tar
    mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs"
    podman import "$rootfs" "$BASE_IMAGE"
    rm -f "$rootfs"
fi

echo "== building $IMAGE"
start=$(date +%s)
podman build --format docker --network host \
    -v "$CA:/host-ca.crt:ro" -v "$TORCH_WHEELS:$TORCH_WHEELS:ro" \
    --env PIP_CERT=/host-ca.crt \
    --build-arg TORCH_FIND_LINKS="$TORCH_WHEELS" --build-arg TORCH_SPEC="$TORCH_SPEC" \
    --target cpu -t "$IMAGE" .
echo "build time: $(( $(date +%s) - start )) s"
echo "image size: $(podman image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MiB", $1/1048576}')"

echo "== running"
cleanup
podman run -d --name "$NAME" --runtime runc --network host \
    --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    -e DISTILL_PORT="$PORT" -e DISTILL_HOST=127.0.0.1 "$IMAGE" >/dev/null
for _ in $(seq 120); do
    if curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; then break; fi
    sleep 1
done
curl -sf "http://127.0.0.1:$PORT/readyz"; echo
echo "user in container: $(podman exec "$NAME" id -u)"

body='{"student_logits": [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], "teacher_logits": [[1.5, 1.0, -0.5], [0.0, 0.0, 1.0]], "temperature": 2.0}'
answer=$(curl -sf "http://127.0.0.1:$PORT/v1/kl_div" -H 'content-type: application/json' -d "$body")
echo "answer: $answer"
"$PYTHON" - "$answer" <<'PY'
import json, sys, torch, distill
answer = json.loads(sys.argv[1])
expected = distill.kl_div(torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]),
                          teacher_logits=torch.tensor([[1.5, 1.0, -0.5], [0.0, 0.0, 1.0]]), temperature=2.0)
assert abs(answer["loss"] - float(expected.loss)) <= 1e-6 * abs(float(expected.loss)), (answer["loss"], float(expected.loss))
assert torch.allclose(torch.tensor(answer["grad"]), expected.grad, rtol=1e-5, atol=1e-7)
print(f"loss from the container {answer['loss']:.9f} == engine {float(expected.loss):.9f}: OK")
PY
info=$(curl -sf "http://127.0.0.1:$PORT/v1/info")
echo "info: $info"
"$PYTHON" -c 'import json, sys; info = json.loads(sys.argv[1]); assert info["kernels"] in ("avx512", "avx2", "baseline") and info["json_reader"] == "compiled", info; print("compiled kernels and JSON reader in the image: OK")' "$info"
podman exec "$NAME" python3 -c 'import importlib.util as u, os; assert not [m for m in ("pip", "setuptools", "wheel") if u.find_spec(m)], "pip in the image"; assert "arena_max=1" in os.environ["GLIBC_TUNABLES"]; print("no pip, setuptools or wheel in the runtime image; GLIBC_TUNABLES set: OK")'
if podman healthcheck run "$NAME"; then echo "HEALTHCHECK (GET /livez inside the container): healthy"; else echo "HEALTHCHECK failed"; exit 1; fi
