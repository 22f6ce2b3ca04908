package ai.distill.client;

import com.fasterxml.jackson.databind.module.SimpleModule;

/**
 * Replaces the generated module of RFC 3339 date-time deserializers (not generated: see
 * .openapi-generator-ignore), which needs jackson-datatype-jsr310; distill's API has no date or time fields.
 */
public class RFC3339JavaTimeModule extends SimpleModule {
    public RFC3339JavaTimeModule() {
        super("RFC3339JavaTimeModule (empty: no date or time fields)");
    }
}
