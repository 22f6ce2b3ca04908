#!/usr/bin/env bash
# The toolchains of the generated-client tests and the spec lint (tests/openapi), from the registries these
# machines reach: Debian's JDK, Jackson (and the two annotation jars the generated Java names), Go with
# gopkg.in/validator.v2, node and npm; then the npm packages pinned in tests/openapi/package-lock.json
# (typescript, openapi-typescript, openapi-fetch, @redocly/cli). openapi-generator-cli (the generator's jar)
# and openapi-python-client come with the project's `test` extra (pip).
#
# Run as root (or with sudo on PATH) on Debian 12. A compiler or runtime already on PATH (javac, go, node with
# npm, from Debian or not) is used as it is; the libraries are Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

LIBRARIES=(
    libjackson2-core-java libjackson2-databind-java libjackson2-annotations-java
    libjsr305-java libgeronimo-annotation-1.3-spec-java
    golang-gopkg-validator.v2-dev
)
missing=()
for package in "${LIBRARIES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
command -v javac >/dev/null || missing+=(default-jdk-headless)
command -v go >/dev/null || missing+=(golang-go)
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
    as_root=()
    [[ $(id -u) -eq 0 ]] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
npm ci --prefix tests/openapi --no-audit --no-fund --loglevel=error
