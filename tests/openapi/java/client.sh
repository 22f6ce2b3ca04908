# Java: openapi-generator's java client (native HttpClient, Jackson), compiled with javac against Debian's Jackson.
# openApiNullable=false: no jackson-databind-nullable (not packaged); containerDefaultToNull=true: a tensor's unset
# values list is left out rather than sent empty; the ignore file and java/shims stand in for jackson-datatype-jsr310.
set -euo pipefail
mkdir -p clients
openapi-generator-cli generate -i openapi/openapi.json -g java --library native -o clients/java --ignore-file-override tests/openapi/java/.openapi-generator-ignore --additional-properties=openApiNullable=false,containerDefaultToNull=true,invokerPackage=ai.distill.client,apiPackage=ai.distill.client.api,modelPackage=ai.distill.client.model > clients/java.log
CLASSPATH=/usr/share/java/jackson-databind.jar:/usr/share/java/jackson-core.jar:/usr/share/java/jackson-annotations.jar:/usr/share/java/jsr305.jar:/usr/share/java/geronimo-annotation-1.3-spec.jar
javac -nowarn -cp "$CLASSPATH" -d clients/java/classes $(find clients/java/src/main tests/openapi/java/shims -name '*.java') tests/openapi/java/Main.java
java -cp "$CLASSPATH:clients/java/classes" Main "$1"
