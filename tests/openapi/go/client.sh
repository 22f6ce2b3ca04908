# Go: openapi-generator's go client, built with Debian's Go and gopkg.in/validator.v2 in GOPATH mode (no module proxy).
# enumClassPrefix=true: Dtype and FloatDtype share value names; useOneOfDiscriminatorLookup=true: terms are read by
# their loss tag, and a loss that is a number is not passed to Debian's validator (which refuses non-structs).
set -euo pipefail
mkdir -p clients
openapi-generator-cli generate -i openapi/openapi.json -g go -o clients/go/src/distill --additional-properties=packageName=distill,enumClassPrefix=true,useOneOfDiscriminatorLookup=true > clients/go.log
mkdir -p clients/go/src/example && cp tests/openapi/go/main.go clients/go/src/example/
(cd clients/go/src/example && GO111MODULE=off GOPATH="$PWD/../..:/usr/share/gocode" go build -o ../../example .)
clients/go/example "$1"
