# TypeScript: types from openapi-typescript (defaulted fields stay optional in requests: --default-non-nullable false),
# calls through openapi-fetch; compiled with tsc and run with node.
set -euo pipefail
mkdir -p clients/openapi-fetch
tests/openapi/node_modules/.bin/openapi-typescript openapi/openapi.json --default-non-nullable false -o clients/openapi-fetch/schema.d.ts > clients/openapi-fetch.log
cp tests/openapi/openapi_fetch/main.ts tests/openapi/tsconfig.json clients/openapi-fetch/
ln -sfn ../../tests/openapi/node_modules clients/openapi-fetch/node_modules
tests/openapi/node_modules/.bin/tsc -p clients/openapi-fetch
node clients/openapi-fetch/out/main.js "$1"
