// JSON tensor reader for distill's service: nested JSON number arrays parsed straight into a
// buffer, outside the GIL.
//
// Why: a (64, 32000) request carries 4M numbers. A general JSON parser builds a document of them
// (holding the GIL throughout, so one large request stalls every other request and the event
// loop), and the tensor decoder then copies them out again. Here:
//
// * distill_json_extract walks the whole body once. For every object member that the caller's
//   envelope converter visits and whose value is a non-empty rectangular array of JSON numbers,
//   it records the byte span and shape and parses the numbers into the document's value store;
//   for members named "data" it records long strings of plain printable ASCII (base64 payloads).
//   The caller replaces those spans with short placeholders and gives the small remainder to the
//   general parser, which still validates everything else. Anything this scanner does not follow
//   (bad syntax, ragged or mixed nesting, non-numbers, numbers beyond float64) is simply not
//   extracted and stays with the general parser, so its errors are reported exactly as before.
// * Numbers: integer literals of up to 19 digits as Python's json reads them ("-0" is 0; longer
//   ones, and negative ones below −2^63, are left to the general parser, which refuses them), others correctly rounded: Clinger's fast path (≤ 19
//   digits, |decimal exponent| ≤ 22: one exact IEEE multiply or divide) and std::from_chars beyond
//   it; underflow gives zero. This runs at about simdjson's speed per number.
// * distill_json_values copies one array out as float64, float32 or (integral arrays) int64.
//
// Responses are left to orjson: std::to_chars (shortest round-trip) took twice its time per number.
//
// The body must be followed by a NUL byte (Python bytes objects always are): digit and
// whitespace loops stop at it without a bounds test.

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <system_error>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace {

constexpr int kMaxDims = 32;
constexpr int kMaxDepth = 512;
constexpr int kSpanArray = 0;
constexpr int kSpanString = 1;
constexpr int kOutFloat64 = 0;
constexpr int kOutInt64 = 1;
constexpr int kOutFloat32 = 2;
constexpr double kExactInteger = 9007199254740992.0;  // 2^53

}  // namespace

extern "C" {

struct JsonSpan {
    int64_t start;  // byte offset of the value ('[' or the opening quote)
    int64_t end;  // one past its last byte
    int32_t kind;  // kSpanArray or kSpanString
    int32_t integral;  // arrays: every number is an integer literal
    int32_t ndim;
    int32_t reserved;
    int64_t count;  // arrays: numbers; strings: characters between the quotes
    int64_t offset;  // arrays: index of the first number in the document's value store
    int64_t shape[kMaxDims];
};

struct JsonDocument {
    std::vector<double> values;
};

}  // extern "C"

namespace {

inline bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
inline bool is_digit(char c) { return static_cast<unsigned char>(c - '0') < 10; }
inline bool is_plain(char c) { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\'; }

inline const char* skip_space(const char* p) {
    while (is_space(*p)) ++p;
    return p;
}

inline uint64_t load8(const char* p) {
    uint64_t value;
    std::memcpy(&value, p, sizeof(value));
    return value;
}

// Past the leading run of plain characters: 16 bytes at a time with SSE2 compares (every x86-64
// has them), then 8 at a time (SWAR tests for a byte below 0x20, above 0x7e, '"' or '\\'); it
// stops at the 8-byte word holding the first other byte. A base64 payload is almost all of a
// body's bytes: with the SSE2 loop a body holding a 40 KB string is scanned in 3.1 µs instead of
// 7.4 (400 KB: 19.5 instead of 62).
inline const char* skip_plain(const char* p, const char* end) {
#if defined(__SSE2__)
    const __m128i below = _mm_set1_epi8(0x20 - 1), above = _mm_set1_epi8(0x7f);
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    while (end - p >= 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        // Signed compares: bytes from 0x80 are negative, so "above 0x1f" already excludes them.
        const __m128i printable = _mm_and_si128(_mm_cmpgt_epi8(v, below), _mm_cmplt_epi8(v, above));
        const __m128i special = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
        if (_mm_movemask_epi8(_mm_andnot_si128(special, printable)) != 0xFFFF) break;
        p += 16;
    }
#endif
    constexpr uint64_t ones = 0x0101010101010101;
    constexpr uint64_t highs = 0x8080808080808080;
    while (end - p >= 8) {
        const uint64_t v = load8(p);
        const uint64_t below_space = (v - ones * 0x20) & ~v;
        const uint64_t above_tilde = (v + ones * (0x7f - 0x7e)) | v;
        const uint64_t quote = v ^ (ones * '"');
        const uint64_t backslash = v ^ (ones * '\\');
        const uint64_t is_quote = (quote - ones) & ~quote;
        const uint64_t is_backslash = (backslash - ones) & ~backslash;
        if ((below_space | above_tilde | is_quote | is_backslash) & highs) break;
        p += 8;
    }
    return p;
}

constexpr double kPowersOf10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                  1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

// A token beyond the fast path: correctly rounded by from_chars; underflow gives (signed) zero,
// overflow fails.
bool parse_slow(const char* p, const char* stop, double& out) {
    auto [ptr, error] = std::from_chars(p, stop, out);
    if (error == std::errc()) return ptr == stop;
    if (error != std::errc::result_out_of_range) return false;
    const std::string token(p, stop);
    const double value = std::strtod(token.c_str(), nullptr);
    if (std::isinf(value)) return false;
    out = value;
    return true;
}

// Whether 8 bytes (little-endian) are all ASCII digits, and their value: the SWAR steps of
// fast_float (Lemire), so a typical 8-digit fraction costs one multiply chain instead of 8 branches.
inline bool eight_digits(uint64_t v) {
    return (((v & 0xF0F0F0F0F0F0F0F0) | (((v + 0x0606060606060606) & 0xF0F0F0F0F0F0F0F0) >> 4)) == 0x3333333333333333);
}

inline uint64_t eight_digit_value(uint64_t v) {
    const uint64_t mask = 0x000000FF000000FF;
    const uint64_t mul1 = 0x000F424000000064;  // 100 + (1000000 << 32)
    const uint64_t mul2 = 0x0000271000000001;  // 1 + (10000 << 32)
    v -= 0x3030303030303030;
    v = (v * 10) + (v >> 8);
    return static_cast<uint32_t>((((v & mask) * mul1) + (((v >> 16) & mask) * mul2)) >> 32);
}

constexpr uint64_t kIntegerPowersOf10[] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000};

// Digits at p appended to mantissa (digits counts them). Eight bytes at a time: the run of digits
// they start with is found from a byte mask, without a branch per digit. A borrow or carry between
// bytes only disturbs bytes after the first non-digit, which are not used.
inline const char* take_digits(const char* p, const char* end, uint64_t& mantissa, int& digits) {
    while (end - p >= 8) {
        const uint64_t v = load8(p);
        const uint64_t shifted = v - 0x3030303030303030;
        const uint64_t non_digits = (shifted | (shifted + 0x7676767676767676)) & 0x8080808080808080;
        if (non_digits == 0) {
            if (digits > 11) break;
            mantissa = mantissa * 100000000 + eight_digit_value(v);
            digits += 8;
            p += 8;
            continue;
        }
        const int run = __builtin_ctzll(non_digits) >> 3;
        if (run == 0) return p;
        if (digits + run > 19) break;
        const uint64_t padded = (v << (8 * (8 - run))) | (0x3030303030303030 >> (8 * run));
        mantissa = mantissa * kIntegerPowersOf10[run] + eight_digit_value(padded);
        digits += run;
        return p + run;
    }
    while (is_digit(*p)) {
        mantissa = mantissa * 10 + static_cast<uint64_t>(*p - '0');
        ++digits;
        ++p;
    }
    return p;
}

// One JSON number (RFC 8259 grammar) at p: its end, with its value in `out`; null when p holds no
// valid number or it overflows float64. `integral` is cleared by a fraction or an exponent.
const char* parse_number(const char* p, const char* end, bool& integral, double& out) {
    const char* const start = p;
    const bool negative = *p == '-';
    p += negative;
    uint64_t mantissa = 0;
    int digits = 0;  // digits taken into mantissa; more than 19 may overflow it
    int64_t exponent = 0;
    if (*p == '0') {
        ++p;
    } else if (is_digit(*p)) {
        p = take_digits(p, end, mantissa, digits);
    } else {
        return nullptr;
    }
    bool token_integral = true;
    if (*p == '.') {
        token_integral = false;
        ++p;
        if (!is_digit(*p)) return nullptr;
        const int before = digits;
        p = take_digits(p, end, mantissa, digits);
        exponent -= digits - before;
    }
    if (*p == 'e' || *p == 'E') {
        token_integral = false;
        ++p;
        const bool negative_exponent = *p == '-';
        p += *p == '-' || *p == '+';
        if (!is_digit(*p)) return nullptr;
        int64_t value = 0;
        do {
            if (value < 100000) value = value * 10 + (*p - '0');
            ++p;
        } while (is_digit(*p));
        exponent += negative_exponent ? -value : value;
    }
    integral = integral && token_integral;
    // simdjson's big-integer rules apply: integers beyond [−2^63, 2^64 − 1] are not numbers it reads.
    if (digits > 19 && token_integral) return nullptr;
    if (token_integral && negative && mantissa > (uint64_t{1} << 63)) return nullptr;
    if (digits > 19) {
        if (!parse_slow(start, p, out)) return nullptr;
    } else if (mantissa == 0) {
        out = negative && !token_integral ? -0.0 : 0.0;
    } else if (token_integral) {
        out = negative ? -static_cast<double>(mantissa) : static_cast<double>(mantissa);
    } else if (mantissa <= (uint64_t{1} << 53) && exponent >= -22 && exponent <= 22) {
        const double value = static_cast<double>(mantissa);
        out = exponent < 0 ? value / kPowersOf10[-exponent] : value * kPowersOf10[exponent];
        if (negative) out = -out;
    } else if (!parse_slow(start, p, out)) {
        return nullptr;
    }
    return p;
}

// A non-empty rectangular array of numbers at p ('['): its end, with the span's shape, count and
// integral filled in and the numbers appended to `values`; null (and `values` as it was) for
// anything else, which is left to the general parser.
const char* parse_numeric_array(const char* p, const char* end, JsonSpan& span, std::vector<double>& values) {
    const size_t first = values.size();
    const auto fail = [&]() -> const char* {
        values.resize(first);
        return nullptr;
    };
    const auto close = [&](int level, int64_t length) {
        int64_t& expected = span.shape[level];
        if (expected < 0) expected = length;
        return expected == length;
    };
    int ndim = 0;
    while (*p == '[') {
        if (++ndim > kMaxDims) return fail();
        p = skip_space(p + 1);
    }
    int64_t counts[kMaxDims];  // children completed so far by the open array at each outer level
    for (int level = 0; level < ndim; ++level) {
        span.shape[level] = -1;
        counts[level] = 0;
    }
    bool integral = true;
    while (true) {
        // An innermost array (level ndim - 1): numbers separated by commas, up to its ']'.
        int64_t length = 0;
        while (true) {
            double value;
            p = parse_number(p, end, integral, value);
            if (p == nullptr) return fail();
            values.push_back(value);
            ++length;
            if (*p != ',') {
                p = skip_space(p);
                if (*p != ',') break;
            }
            p = skip_space(p + 1);
        }
        if (*p != ']' || !close(ndim - 1, length)) return fail();
        ++p;
        // Close the outer arrays that end here, up to the comma before a next sibling.
        int level = ndim - 2;
        while (true) {
            if (level < 0) {
                span.kind = kSpanArray;
                span.integral = integral ? 1 : 0;
                span.ndim = ndim;
                span.count = static_cast<int64_t>(values.size() - first);
                span.offset = static_cast<int64_t>(first);
                return p;
            }
            ++counts[level];
            p = skip_space(p);
            if (*p == ',') break;
            if (*p != ']' || !close(level, counts[level])) return fail();
            ++p;
            --level;
        }
        // The sibling after the comma: open it and its first descendants down to the innermost.
        p = skip_space(p + 1);
        for (int opened = level + 1; opened < ndim; ++opened) {
            if (*p != '[') return fail();
            counts[opened] = 0;
            p = skip_space(p + 1);
        }
    }
}

// Walks a document, extracting spans from object members; a failure only means "not followed".
class Extractor {
  public:
    Extractor(const char* begin, const char* end, int64_t min_string, JsonSpan* spans, int64_t capacity, JsonDocument& document)
        : begin_(begin), end_(end), min_string_(min_string), spans_(spans), capacity_(capacity), document_(document) {}

    int64_t run() {
        const char* p = skip_space(begin_);
        if (p >= end_ || *p != '{' || !object(p, 1, true)) return -1;
        return skip_space(p) == end_ ? count_ : -1;
    }

  private:
    // `reachable`: whether the caller's envelope converter (service/body.py) will see this value:
    // it visits every object member, and the elements of arrays whose first element is an object.
    bool value(const char*& p, int depth, bool reachable, const char* key, int64_t key_length) {
        p = skip_space(p);
        if (p >= end_) return false;
        switch (*p) {
            case '{':
                return object(p, depth + 1, reachable);
            case '[':
                if (reachable && key != nullptr && count_ < capacity_) {
                    JsonSpan& span = spans_[count_];
                    const char* after = parse_numeric_array(p, end_, span, document_.values);
                    if (after != nullptr && after <= end_) {
                        record(span, p, after);
                        p = after;
                        return true;
                    }
                }
                return array(p, depth + 1, reachable);
            case '"':
                if (reachable && key_length == 4 && std::memcmp(key, "data", 4) == 0 && count_ < capacity_ && plain_string(p)) return true;
                return string(p);
            default: {
                const char* q = p;
                while (q < end_ && (std::isalnum(static_cast<unsigned char>(*q)) || *q == '-' || *q == '+' || *q == '.')) ++q;
                if (q == p) return false;
                p = q;
                return true;
            }
        }
    }

    bool object(const char*& p, int depth, bool reachable) {
        if (depth > kMaxDepth) return false;
        p = skip_space(p + 1);
        if (p < end_ && *p == '}') {
            ++p;
            return true;
        }
        while (true) {
            p = skip_space(p);
            if (p >= end_ || *p != '"') return false;
            const char* key = p + 1;
            if (!string(p)) return false;
            const int64_t key_length = (p - 1) - key;
            p = skip_space(p);
            if (p >= end_ || *p != ':') return false;
            ++p;
            if (!value(p, depth, reachable, key, key_length)) return false;
            p = skip_space(p);
            if (p >= end_) return false;
            if (*p == ',') {
                ++p;
                continue;
            }
            if (*p != '}') return false;
            ++p;
            return true;
        }
    }

    bool array(const char*& p, int depth, bool reachable) {
        if (depth > kMaxDepth) return false;
        p = skip_space(p + 1);
        if (p < end_ && *p == ']') {
            ++p;
            return true;
        }
        const bool elements_reachable = reachable && *p == '{';
        while (true) {
            if (!value(p, depth, elements_reachable, nullptr, 0)) return false;
            p = skip_space(p);
            if (p >= end_) return false;
            if (*p == ',') {
                ++p;
                continue;
            }
            if (*p != ']') return false;
            ++p;
            return true;
        }
    }

    // Any string (p at its opening quote): skipped, escapes honoured; the general parser validates it.
    bool string(const char*& p) {
        ++p;
        while (p < end_) {
            if (*p == '\\') {
                p += 2;
            } else if (*p == '"') {
                ++p;
                return true;
            } else {
                ++p;
            }
        }
        return false;
    }

    // A long string of plain printable ASCII (no escapes): extracted whole.
    bool plain_string(const char*& p) {
        const char* q = skip_plain(p + 1, end_);
        while (q < end_ && is_plain(*q)) ++q;
        if (q >= end_ || *q != '"' || q - (p + 1) < min_string_) return false;
        JsonSpan& span = spans_[count_];
        span.kind = kSpanString;
        span.integral = 0;
        span.ndim = 0;
        span.count = q - (p + 1);
        span.offset = 0;
        record(span, p, q + 1);
        p = q + 1;
        return true;
    }

    void record(JsonSpan& span, const char* start, const char* stop) {
        span.start = start - begin_;
        span.end = stop - begin_;
        span.reserved = 0;
        ++count_;
    }

    const char* begin_;
    const char* end_;
    int64_t min_string_;
    JsonSpan* spans_;
    int64_t capacity_;
    JsonDocument& document_;
    int64_t count_ = 0;
};

}  // namespace

extern "C" {

// Extracts the spans of a JSON object body (see the file comment) into `spans` (at most
// `capacity`; the rest stay in place) and sets *count to their number, or to -1 when the body is
// not a JSON object this scanner follows. Returns the document owning the parsed numbers (free it
// with distill_json_free), or null when out of memory.
JsonDocument* distill_json_extract(const char* body, int64_t size, int64_t min_string, JsonSpan* spans, int64_t capacity, int64_t* count) {
    JsonDocument* document = new (std::nothrow) JsonDocument();
    if (document == nullptr) return nullptr;
    try {
        document->values.reserve(static_cast<size_t>(size / 8));
        *count = Extractor(body, body + size, min_string, spans, capacity, *document).run();
    } catch (const std::bad_alloc&) {
        delete document;
        return nullptr;
    }
    return document;
}

void distill_json_free(JsonDocument* document) { delete document; }

// sizeof the named struct, which the loader checks against its ctypes declaration; -1 if unknown.
int64_t distill_abi_size(const char* name) { return std::strcmp(name, "JsonSpan") == 0 ? sizeof(JsonSpan) : -1; }

// The numbers of an extracted array, in order, as float64, float32 (rounded to nearest, as a
// float64 → float32 cast in torch) or (integral arrays) int64. 0 on
// success; -1 for an integer of magnitude 2^53 or more, which float64 may not have held exactly.
int distill_json_values(const JsonDocument* document, const JsonSpan* span, int out_kind, void* out) {
    const double* values = document->values.data() + span->offset;
    if (out_kind == kOutFloat64) {
        std::memcpy(out, values, static_cast<size_t>(span->count) * sizeof(double));
        return 0;
    }
    if (out_kind == kOutFloat32) {
        float* singles = static_cast<float*>(out);
        for (int64_t i = 0; i < span->count; ++i) singles[i] = static_cast<float>(values[i]);
        return 0;
    }
    int64_t* integers = static_cast<int64_t*>(out);
    for (int64_t i = 0; i < span->count; ++i) {
        if (std::fabs(values[i]) >= kExactInteger) return -1;
        integers[i] = static_cast<int64_t>(values[i]);
    }
    return 0;
}

}  // extern "C"
