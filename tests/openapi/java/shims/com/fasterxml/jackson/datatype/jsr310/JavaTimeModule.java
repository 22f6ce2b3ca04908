package com.fasterxml.jackson.datatype.jsr310;

import com.fasterxml.jackson.databind.module.SimpleModule;

/**
 * Stands in for jackson-datatype-jsr310, which Debian does not package: the generated Java client registers
 * this module unconditionally, and distill's API has no date or time fields for it to handle. Where Maven
 * Central is reachable, depend on com.fasterxml.jackson.datatype:jackson-datatype-jsr310 instead.
 */
public class JavaTimeModule extends SimpleModule {
    public JavaTimeModule() {
        super("JavaTimeModule (empty: no date or time fields)");
    }
}
