# TypeScript: openapi-generator's typescript-fetch client, compiled with tsc and run with node.
set -euo pipefail
mkdir -p clients
openapi-generator-cli generate -i openapi/openapi.json -g typescript-fetch -o clients/typescript-fetch/client > clients/typescript-fetch.log
cp tests/openapi/typescript_fetch/main.ts tests/openapi/tsconfig.json clients/typescript-fetch/
ln -sfn ../../tests/openapi/node_modules clients/typescript-fetch/node_modules
tests/openapi/node_modules/.bin/tsc -p clients/typescript-fetch
node clients/typescript-fetch/out/main.js "$1"
