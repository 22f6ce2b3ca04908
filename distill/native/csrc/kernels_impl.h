// Row kernels of the fused CPU path, written once and compiled once per instruction set.
//
// kernels.cpp includes this file inside a namespace once per instruction set (AVX-512, AVX2+FMA,
// baseline) and picks one at run time. The loops are written over packs (GCC vector extensions)
// rather than left to the auto-vectoriser, which gives up on the reductions and selects here: a
// float32 pack is DISTILL_FLOAT_LANES lanes (16 in one AVX-512 register, 8 in one AVX2 register or
// two SSE registers on the baseline build), a float64 pack is one
// lane computed with libm. The float32 exp and log are Cephes' polynomial approximations (a couple
// of ulps), evaluated lane-wise. A row's tail is loaded into a partly filled pack, and lanes past
// the row's end are dropped from every sum (`keep`) and never stored. No system header may be
// included here (this file is included inside a namespace).

template <typename T>
struct Pack;

template <>
struct Pack<float> {
    static constexpr int64_t width = DISTILL_FLOAT_LANES;
    typedef float V __attribute__((vector_size(4 * width)));
    typedef int32_t I __attribute__((vector_size(4 * width)));

    static inline V splat(float x) { return V{} + x; }
    static inline V load(const float* p, int64_t count, float fill) {
        V v;
        if (count == width) {
            __builtin_memcpy(&v, p, sizeof v);
            return v;
        }
        v = splat(fill);
        for (int64_t j = 0; j < count; ++j) v[j] = p[j];
        return v;
    }
    static inline void store(float* p, V v, int64_t count) {
        if (count == width) {
            __builtin_memcpy(p, &v, sizeof v);
            return;
        }
        for (int64_t j = 0; j < count; ++j) p[j] = v[j];
    }
    // v with the lanes at and past `count` set to 0.
    static inline V keep(V v, int64_t count) {
        if (count == width) return v;
        I lane;
        for (int j = 0; j < width; ++j) lane[j] = j;
        return lane < static_cast<int32_t>(count) ? v : splat(0.0f);
    }
    // Pairwise: lane j is added to lane j + width/2, halving the pack until one lane is left.
    static inline float sum(V v) {
        float lanes[width];
        __builtin_memcpy(lanes, &v, sizeof v);
        for (int half = width / 2; half > 0; half /= 2)
            for (int j = 0; j < half; ++j) lanes[j] += lanes[j + half];
        return lanes[0];
    }
    static inline float max(V v) {
        float m = v[0];
        for (int j = 1; j < width; ++j) m = v[j] > m ? v[j] : m;
        return m;
    }
    // e^x for x <= 0. Below −127·ln 2 (and for -inf) the result is exactly 0: the clamp there gives
    // k = −127, whose power of two 2^k has exponent bits 0 and so reads as +0.0.
    static inline V exp(V x) {
        const V lo = splat(-88.0296919311f);
        const V xc = x > lo ? x : lo;
        const V magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer in the low bits
        const V shifted = xc * 1.44269504088896341f + magic;
        const V k = shifted - magic;
        V r = xc - k * 0.693359375f;
        r = r + k * 2.12194440e-4f;
        V p = splat(1.9875691500e-4f);
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        p = p * (r * r) + r + 1.0f;
        const I ki = (I)shifted - 0x4B400000;  // the integer k, read back from the mantissa bits
        return p * (V)((ki + 127) << 23);
    }
    // log(x) for finite x > 0, subnormals included; other lanes get unspecified values.
    static inline V log(V x) {
        const I tiny = x < 1.17549435e-38f;
        const V xs = tiny ? x * 8388608.0f : x;  // 2^23 brings subnormals into the normal range
        const I bits = (I)xs;
        V e = __builtin_convertvector(((bits >> 23) & 0xff) - 126, V) - (tiny ? splat(23.0f) : splat(0.0f));
        const V m = (V)((bits & 0x007fffff) | 0x3f000000);  // mantissa in [0.5, 1)
        const I low = m < 0.707106781186547524f;
        e = low ? e - 1.0f : e;
        const V f = low ? m + m - 1.0f : m - 1.0f;
        const V z = f * f;
        V y = splat(7.0376836292e-2f);
        y = y * f - 1.1514610310e-1f;
        y = y * f + 1.1676998740e-1f;
        y = y * f - 1.2420140846e-1f;
        y = y * f + 1.4249322787e-1f;
        y = y * f - 1.6668057665e-1f;
        y = y * f + 2.0000714765e-1f;
        y = y * f - 2.4999993993e-1f;
        y = y * f + 3.3333331174e-1f;
        y = y * f * z;
        y = y - 2.12194440e-4f * e;
        y = y - 0.5f * z;
        return f + y + 0.693359375f * e;
    }
};

template <>
struct Pack<double> {
    typedef double V;
    static constexpr int64_t width = 1;

    static inline V splat(double x) { return x; }
    static inline V load(const double* p, int64_t, double) { return *p; }
    static inline void store(double* p, V v, int64_t) { *p = v; }
    static inline V keep(V v, int64_t) { return v; }
    static inline double sum(V v) { return v; }
    static inline double max(V v) { return v; }
    static inline V exp(V x) { return std::exp(x); }
    static inline V log(V x) { return std::log(x); }
};

// log(1 + e) for e in [0, 1] given inv = 1 / (1 + e) already at hand, accurate for tiny e: with
// u = fl(1 + e), log1p(e) = log(u) − (u − 1 − e) / u to first order in the rounding of u (the
// correction is exact where u − 1 == e, and gives e itself where u rounds to 1).
template <typename P, typename V>
static inline V log1p_with_inverse(V e, V inv) {
    const V u = e + 1;
    return P::log(u) - ((u - 1) - e) * inv;
}

// log(1 + e) for e in [0, 1], accurate for tiny e (Goldberg: log(u) · e / (u − 1) with u = 1 + e).
template <typename P, typename V>
static inline V log1p_small(V e) {
    const V u = e + 1;
    const V d = u - 1;
    const V safe = d == 0 ? P::splat(1) : d;
    return d == 0 ? e : P::log(u) * (e / safe);
}

template <typename T>
static inline T row_max(const T* x, int64_t n) {
    typedef Pack<T> P;
    typename P::V m = P::splat(-INFINITY);
    for (int64_t c = 0; c < n; c += P::width) {
        const int64_t k = n - c < P::width ? n - c : P::width;
        const typename P::V v = P::load(x + c, k, -INFINITY);
        m = v > m ? v : m;
    }
    return P::max(m);
}

// Per-row maximum and minimum, both NaN for a row holding a NaN (like torch.amax / torch.amin); the
// minima are written only where a.min is given. Returns whether every value of these rows is finite.
template <typename T>
static bool extrema_rows(const ExtremaArgs& a, int64_t begin, int64_t end) {
    typedef Pack<T> P;
    typedef typename P::V V;
    const int64_t n = a.classes;
    bool finite = true;
    for (int64_t i = begin; i < end; ++i) {
        const T* x = static_cast<const T*>(a.values) + i * n;
        V high = P::splat(-INFINITY), low = P::splat(INFINITY), nan = P::splat(0);
        for (int64_t c = 0; c < n; c += P::width) {
            const int64_t k = n - c < P::width ? n - c : P::width;
            const V v = P::load(x + c, k, x[0]);
            high = v > high ? v : high;
            low = v < low ? v : low;
            nan = v != v ? P::splat(1) : nan;
        }
        const bool has_nan = P::max(nan) != 0;
        const T largest = P::max(high), smallest = -P::max(-low);
        static_cast<T*>(a.max)[i] = has_nan ? static_cast<T>(NAN) : largest;
        if (a.min != nullptr) static_cast<T*>(a.min)[i] = has_nan ? static_cast<T>(NAN) : smallest;
        finite = finite && !has_nan && std::isfinite(largest) && std::isfinite(smallest);
    }
    return finite;
}

// Throughput probe for benchmarks/engine.py --floors: out = e^in (op 0, for in <= 0) or log(in)
// (op 1, for in > 0) over rows [begin, end) of (rows, classes) float32, with the vector code the
// losses use, so a loss's time can be set against the transcendentals it computes.
static void probe(int op, const float* in, float* out, int64_t classes, int64_t begin, int64_t end) {
    typedef Pack<float> P;
    typedef P::V V;
    for (int64_t i = begin; i < end; ++i) {
        for (int64_t c = 0; c < classes; c += P::width) {
            const int64_t k = classes - c < P::width ? classes - c : P::width;
            const V v = P::load(in + i * classes + c, k, 1);
            P::store(out + i * classes + c, op == 0 ? P::exp(v) : P::log(v), k);
        }
    }
}

static bool extrema(const ExtremaArgs& a, int64_t begin, int64_t end) {
    return a.dtype == kFloat64 ? extrema_rows<double>(a, begin, end) : extrema_rows<float>(a, begin, end);
}

template <typename T>
static inline T row_scale(const GradScale& scale, int64_t i) {
    return scale.per_row ? static_cast<const T*>(scale.per_row)[i] : static_cast<T>(scale.all);
}

// Hard-label cross-entropy (see distill/cross_entropy.py for the formulas), rows [begin, end).
template <typename T, bool Grad, bool Smooth, bool Weighted>
static void ce_hard_rows(const HardArgs& a, int64_t begin, int64_t end) {
    typedef Pack<T> P;
    typedef typename P::V V;
    const int64_t n = a.classes;
    const T* weight = static_cast<const T*>(a.weight);
    const T eps = static_cast<T>(a.epsilon);
    const T smooth = eps / static_cast<T>(n);
    const T total_weight = static_cast<T>(a.weight_sum);
    for (int64_t i = begin; i < end; ++i) {
        const int64_t r = a.kept ? a.kept[i] : i;
        const T* s = static_cast<const T*>(a.student) + r * n;
        T* g = Grad ? static_cast<T*>(a.grad) + r * n : nullptr;
        const T m = a.row_max ? static_cast<const T*>(a.row_max)[r] : row_max(s, n);
        V sum = P::splat(0), dot = P::splat(0);
        int64_t c = 0;
        if (!Smooth) {
            // Two independent packs per step: the exp polynomial is a long dependency chain.
            V sum2 = P::splat(0);
            for (; c + 2 * P::width <= n; c += 2 * P::width) {
                const V e0 = P::exp(P::load(s + c, P::width, 0) - m);
                const V e1 = P::exp(P::load(s + c + P::width, P::width, 0) - m);
                if (Grad) {
                    P::store(g + c, e0, P::width);
                    P::store(g + c + P::width, e1, P::width);
                }
                sum += e0;
                sum2 += e1;
            }
            sum += sum2;
        }
        for (; c < n; c += P::width) {
            const int64_t k = n - c < P::width ? n - c : P::width;
            const V x = P::load(s + c, k, 0);
            const V e = P::keep(P::exp(x - m), k);
            if (Grad) P::store(g + c, e, k);
            sum += e;
            if (Smooth) dot += P::keep(Weighted ? P::load(weight + c, k, 0) * (x - m) : x - m, k);
        }
        // log q_c = (s_c − m) − log Σ: from the shifted logit, so nothing cancels at large logits.
        const T row_sum = P::sum(sum);
        const T log_sum = std::log(row_sum);
        const int64_t y = a.labels[r];
        const bool valid = y != a.ignore_index;
        const T w_y = valid ? (Weighted ? weight[y] : T(1)) : T(0);
        T loss = 0;
        if (valid) {
            loss = -(T(1) - eps) * w_y * ((s[y] - m) - log_sum);
            if (Smooth) loss += smooth * (log_sum * total_weight - P::sum(dot));
        }
        static_cast<T*>(a.row_loss)[i] = loss;
        if (!Grad) continue;
        const T gs = valid ? row_scale<T>(a.scale, i) : T(0);
        const T coef = ((T(1) - eps) * w_y + smooth * total_weight) * gs / row_sum;
        const T k_smooth = gs * smooth;
        for (int64_t c = 0; c < n; c += P::width) {
            const int64_t k = n - c < P::width ? n - c : P::width;
            V out = P::load(g + c, k, 0) * coef;
            if (Smooth) out -= (Weighted ? P::load(weight + c, k, 0) : P::splat(1)) * k_smooth;
            P::store(g + c, out, k);
        }
        if (valid) g[y] -= gs * (T(1) - eps) * w_y;
    }
}

// Soft targets against softmax(s / T): KL(p ‖ q) or cross-entropy −Σ r · log q with r = w ⊙ p'
// (see distill/kl_div.py and distill/cross_entropy.py). One pass computes the student's and the
// teacher's exponentials and every row sum; the gradient pass reuses the stored exponentials.
template <typename T, int Kind, bool KL, bool Grad, bool Weighted>
static void soft_rows(const SoftArgs& a, int64_t begin, int64_t end, T* scratch) {
    typedef Pack<T> P;
    typedef typename P::V V;
    const int64_t n = a.classes;
    const T inv_t = static_cast<T>(a.inv_t);
    const T eps = static_cast<T>(a.epsilon);
    const T smooth = eps / static_cast<T>(n);
    const T* weight = static_cast<const T*>(a.weight);
    const T total_weight = static_cast<T>(a.weight_sum);
    const T factor = static_cast<T>(a.factor);
    const V zero = P::splat(0);
    for (int64_t i = begin; i < end; ++i) {
        const int64_t r = a.kept ? a.kept[i] : i;
        const T* s = static_cast<const T*>(a.student) + r * n;
        const T* t = static_cast<const T*>(a.teacher) + r * n;
        T* g = Grad ? static_cast<T*>(a.grad) + r * n : nullptr;
        const T ms = (a.row_max ? static_cast<const T*>(a.row_max)[r] : row_max(s, n)) * inv_t;
        const T mt = Kind == kTeacherLogits ? row_max(t, n) * inv_t : T(0);
        V sum_s = zero, sum_t = zero, acc = zero, mass = zero, wz = zero;
        for (int64_t c = 0; c < n; c += P::width) {
            const int64_t k = n - c < P::width ? n - c : P::width;
            const V z = P::load(s + c, k, 0) * inv_t;
            const V es = P::keep(P::exp(z - ms), k);
            sum_s += es;
            if (Grad) P::store(g + c, es, k);
            const V tv = P::load(t + c, k, 0);
            V p, log_p;
            if (Kind == kTeacherLogits) {
                log_p = tv * inv_t;
                p = P::keep(P::exp(log_p - mt), k);
                sum_t += p;
            } else if (Kind == kTeacherProbs) {
                p = tv;
                log_p = KL ? P::log(p) : zero;
            } else {
                log_p = tv;
                p = P::keep(P::exp(log_p), k);
            }
            if (Grad && Kind != kTeacherProbs) P::store(scratch + c, p, k);
            // Shifted logits (z − max z, and t/T − max for teacher logits) in every product, so that
            // the loss is formed without cancelling large logits against their log-sum-exp.
            const V zs = z - ms;
            if (KL) {
                acc += p > 0 ? p * ((Kind == kTeacherLogits ? log_p - mt : log_p) - zs) : zero;
                mass += p;
            } else {
                const V w = Weighted ? P::load(weight + c, k, 0) : P::splat(1);
                mass += w * p;
                acc += p > 0 ? w * p * zs : zero;
                if (eps > T(0)) wz += P::keep(w * zs, k);
            }
        }
        const T row_sum_s = P::sum(sum_s);
        const T log_sum_s = std::log(row_sum_s);
        const T row_sum_t = Kind == kTeacherLogits ? P::sum(sum_t) : T(1);
        T loss, row_mass;
        if (KL) {
            if (Kind == kTeacherLogits) {
                loss = P::sum(acc) / row_sum_t + (log_sum_s - std::log(row_sum_t));
                row_mass = T(1);
            } else {
                row_mass = P::sum(mass);
                loss = P::sum(acc) + log_sum_s * row_mass;
            }
        } else {
            const bool normalised = Kind == kTeacherLogits && !Weighted;
            row_mass = normalised ? T(1) : (T(1) - eps) * P::sum(mass) / row_sum_t + smooth * total_weight;
            const T target_dot = (T(1) - eps) * P::sum(acc) / row_sum_t + (eps > T(0) ? smooth * P::sum(wz) : T(0));
            loss = log_sum_s * row_mass - target_dot;
        }
        static_cast<T*>(a.row_loss)[i] = loss * factor;
        if (!Grad) continue;
        const T gs = row_scale<T>(a.scale, i);
        const T q_coef = gs * row_mass / row_sum_s;
        const T* p_row = Kind == kTeacherProbs ? t : scratch;
        const T p_coef = gs * (KL ? T(1) : T(1) - eps) / row_sum_t;
        const T k_smooth = KL ? T(0) : gs * smooth;
        for (int64_t c = 0; c < n; c += P::width) {
            const int64_t k = n - c < P::width ? n - c : P::width;
            const V target = P::load(p_row + c, k, 0) * p_coef + k_smooth;
            const V w = Weighted ? P::load(weight + c, k, 0) : P::splat(1);
            P::store(g + c, P::load(g + c, k, 0) * q_coef - w * target, k);
        }
    }
}

// Soft-label BCE with logits (see distill/bce.py): one pass, three transcendentals and two divisions
// per element (one without teacher logits).
template <typename T, bool TeacherLogits, bool Grad, bool Weighted, bool PosWeighted>
static void bce_rows(const BceArgs& a, int64_t begin, int64_t end) {
    typedef Pack<T> P;
    typedef typename P::V V;
    const int64_t n = a.classes;
    const T inv_t = static_cast<T>(a.inv_t);
    const T factor = static_cast<T>(a.factor);
    const V zero = P::splat(0), one = P::splat(1);
    for (int64_t i = begin; i < end; ++i) {
        const int64_t r = a.kept ? a.kept[i] : i;
        const T* s = static_cast<const T*>(a.student) + r * n;
        const T* t = static_cast<const T*>(a.teacher) + r * n;
        const T* w = Weighted ? static_cast<const T*>(a.weight) + r * a.weight_row_stride : nullptr;
        const T* pw = PosWeighted ? static_cast<const T*>(a.pos_weight) + r * a.pos_weight_row_stride : nullptr;
        T* g = Grad ? static_cast<T*>(a.grad) + r * n : nullptr;
        const T gs = Grad ? row_scale<T>(a.scale, i) : T(0);
        V sum = zero;
        for (int64_t c = 0; c < n; c += P::width) {
            const int64_t k = n - c < P::width ? n - c : P::width;
            V y = P::load(t + c, k, 0);
            const V x = P::load(s + c, k, 0) * inv_t;
            const V e = P::exp(x < 0 ? x : -x);
            V inv;  // 1 / (1 + e): serves the logarithm and the sigmoid
            if (TeacherLogits) {
                // One division for both reciprocals: 1/a = b · 1/(a·b), a and b in [1, 2].
                const V u = y * inv_t;
                const V eu = P::exp(u < 0 ? u : -u);
                const V both = one / ((eu + 1) * (e + 1));
                inv = both * (eu + 1);
                const V inv_u = both * (e + 1);
                y = u >= 0 ? inv_u : eu * inv_u;
            } else {
                inv = one / (e + 1);
            }
            const V softplus_neg = (x < 0 ? -x : zero) + log1p_with_inverse<P>(e, inv);
            const V pos = PosWeighted ? P::load(pw + c, k, 0) : one;
            const V log_weight = PosWeighted ? (pos - 1) * y + 1 : one;
            const V weight = Weighted ? P::load(w + c, k, 0) : one;
            sum += P::keep(weight * ((1 - y) * x + log_weight * softplus_neg), k);
            if (Grad) {
                const V sig = x >= 0 ? inv : e * inv;
                P::store(g + c, (weight * (log_weight * sig - pos * y)) * gs, k);
            }
        }
        static_cast<T*>(a.row_loss)[i] = P::sum(sum) * factor;
    }
}

// Entry points of this instruction set: pick the template instance for the options and dtype.
template <typename T, bool Grad>
static void ce_hard_typed(const HardArgs& a, int64_t begin, int64_t end) {
    const bool smooth = a.epsilon > 0.0;
    const bool weighted = a.weight != nullptr;
    if (smooth && weighted) ce_hard_rows<T, Grad, true, true>(a, begin, end);
    else if (smooth) ce_hard_rows<T, Grad, true, false>(a, begin, end);
    else if (weighted) ce_hard_rows<T, Grad, false, true>(a, begin, end);
    else ce_hard_rows<T, Grad, false, false>(a, begin, end);
}

static void ce_hard(const HardArgs& a, int64_t begin, int64_t end) {
    if (a.dtype == kFloat64) {
        if (a.grad) ce_hard_typed<double, true>(a, begin, end);
        else ce_hard_typed<double, false>(a, begin, end);
    } else {
        if (a.grad) ce_hard_typed<float, true>(a, begin, end);
        else ce_hard_typed<float, false>(a, begin, end);
    }
}

template <typename T, int Kind, bool KL>
static void soft_kind(const SoftArgs& a, int64_t begin, int64_t end, void* scratch) {
    T* buffer = static_cast<T*>(scratch);
    const bool weighted = a.weight != nullptr;
    if (a.grad) {
        if (weighted) soft_rows<T, Kind, KL, true, true>(a, begin, end, buffer);
        else soft_rows<T, Kind, KL, true, false>(a, begin, end, buffer);
    } else {
        if (weighted) soft_rows<T, Kind, KL, false, true>(a, begin, end, buffer);
        else soft_rows<T, Kind, KL, false, false>(a, begin, end, buffer);
    }
}

template <typename T>
static void soft_typed(const SoftArgs& a, int64_t begin, int64_t end, void* scratch) {
    const bool kl = a.loss == kLossKL;
    switch (a.teacher_kind) {
        case kTeacherLogits:
            if (kl) soft_kind<T, kTeacherLogits, true>(a, begin, end, scratch);
            else soft_kind<T, kTeacherLogits, false>(a, begin, end, scratch);
            break;
        case kTeacherProbs:
            if (kl) soft_kind<T, kTeacherProbs, true>(a, begin, end, scratch);
            else soft_kind<T, kTeacherProbs, false>(a, begin, end, scratch);
            break;
        default:
            if (kl) soft_kind<T, kTeacherLogProbs, true>(a, begin, end, scratch);
            else soft_kind<T, kTeacherLogProbs, false>(a, begin, end, scratch);
    }
}

static void soft(const SoftArgs& a, int64_t begin, int64_t end, void* scratch) {
    if (a.dtype == kFloat64) soft_typed<double>(a, begin, end, scratch);
    else soft_typed<float>(a, begin, end, scratch);
}

template <typename T, bool TeacherLogits, bool Grad>
static void bce_grad(const BceArgs& a, int64_t begin, int64_t end) {
    const bool weighted = a.weight != nullptr;
    const bool pos_weighted = a.pos_weight != nullptr;
    if (weighted && pos_weighted) bce_rows<T, TeacherLogits, Grad, true, true>(a, begin, end);
    else if (weighted) bce_rows<T, TeacherLogits, Grad, true, false>(a, begin, end);
    else if (pos_weighted) bce_rows<T, TeacherLogits, Grad, false, true>(a, begin, end);
    else bce_rows<T, TeacherLogits, Grad, false, false>(a, begin, end);
}

template <typename T>
static void bce_typed(const BceArgs& a, int64_t begin, int64_t end) {
    const bool logits = a.teacher_kind == kTeacherLogits;
    if (a.grad) {
        if (logits) bce_grad<T, true, true>(a, begin, end);
        else bce_grad<T, false, true>(a, begin, end);
    } else {
        if (logits) bce_grad<T, true, false>(a, begin, end);
        else bce_grad<T, false, false>(a, begin, end);
    }
}

static void bce(const BceArgs& a, int64_t begin, int64_t end) {
    if (a.dtype == kFloat64) bce_typed<double>(a, begin, end);
    else bce_typed<float>(a, begin, end);
}

// The divergences of distill/losses/divergences.py (kDiv*), rows [begin, end). Pass 1 takes the
// student's (and teacher logits') exponentials and row sums; pass 2 forms q, log q, p, log p from
// them (log q = (z − max z) − log Σ, no per-element log), the divergence's elements and its
// w = q · ∂D/∂q, and stores w; pass 3 writes the gradient (w − q · Σ w) · scale. Classes where the
// value is infinite (a −inf student class with teacher mass for KL(p‖·); teacher probability 0 where
// the student is finite for KL(q‖·)) make the row loss +inf: the torch path then names them.
template <typename T, int Kind, int Div, bool Grad>
static void divergence_rows(const DivergenceArgs& a, int64_t begin, int64_t end, T* scratch) {
    typedef Pack<T> P;
    typedef typename P::V V;
    const int64_t n = a.classes;
    const T inv_t = static_cast<T>(a.inv_t);
    const T factor = static_cast<T>(a.factor);
    // The mixture m = a·p + b·q in log space, log m = log(a·p + b·q) from log a + log p and log b + log q,
    // so that a tiny a or b (α = 1e-300) neither underflows nor drops its term; a, b and their logs
    // are taken in double. JSD: a = β, b = 1−β; skew KL: a = α, b = 1−α; skew reverse KL: a = 1−α, b = α.
    const double parameter = a.parameter;
    const double coef_p = Div == kDivSkewReverseKL ? 1.0 - parameter : parameter;
    const double coef_q = Div == kDivSkewReverseKL ? parameter : 1.0 - parameter;
    const T beta = static_cast<T>(coef_p), rest = static_cast<T>(coef_q);
    const V log_coef_p = P::splat(static_cast<T>(coef_p > 0 ? std::log(coef_p) : -INFINITY));
    const V log_coef_q = P::splat(static_cast<T>(coef_q > 0 ? std::log(coef_q) : -INFINITY));
    const V zero = P::splat(0), one = P::splat(1), half = P::splat(T(0.5));
    const V neg_inf = P::splat(-INFINITY);
    T* teacher_exp = scratch + n;
    for (int64_t i = begin; i < end; ++i) {
        const int64_t r = a.kept ? a.kept[i] : i;
        const T* s = static_cast<const T*>(a.student) + r * n;
        const T* t = static_cast<const T*>(a.teacher) + r * n;
        T* g = Grad ? static_cast<T*>(a.grad) + r * n : nullptr;
        T* student_exp = Grad ? g : scratch;
        const T ms = (a.row_max ? static_cast<const T*>(a.row_max)[r] : row_max(s, n)) * inv_t;
        const T mt = Kind == kTeacherLogits ? row_max(t, n) * inv_t : T(0);
        V sum_s = zero, sum_t = zero;
        for (int64_t c = 0; c < n; c += P::width) {
            const int64_t k = n - c < P::width ? n - c : P::width;
            const V es = P::keep(P::exp(P::load(s + c, k, 0) * inv_t - ms), k);
            sum_s += es;
            P::store(student_exp + c, es, k);
            if (Kind == kTeacherLogits) {
                const V et = P::keep(P::exp(P::load(t + c, k, 0) * inv_t - mt), k);
                sum_t += et;
                P::store(teacher_exp + c, et, k);
            }
        }
        const T row_sum_s = P::sum(sum_s);
        const T inv_sum_s = T(1) / row_sum_s, log_sum_s = std::log(row_sum_s);
        const T row_sum_t = Kind == kTeacherLogits ? P::sum(sum_t) : T(1);
        const T inv_sum_t = T(1) / row_sum_t, log_sum_t = std::log(row_sum_t);
        V acc = zero, w_sum = zero, infinite = zero;
        for (int64_t c = 0; c < n; c += P::width) {
            const int64_t k = n - c < P::width ? n - c : P::width;
            const V z = P::load(s + c, k, 0) * inv_t;
            const V es = P::load(student_exp + c, k, 0);
            const V q = es * inv_sum_s;
            const V log_q = (z - ms) - log_sum_s;
            V p, log_p, et = zero;
            if (Kind == kTeacherLogits) {
                et = P::load(teacher_exp + c, k, 0);
                p = et * inv_sum_t;
                log_p = (P::load(t + c, k, 0) * inv_t - mt) - log_sum_t;
            } else if (Kind == kTeacherProbs) {
                p = P::load(t + c, k, 1);
                log_p = p > 0 ? P::log(p) : neg_inf;
            } else {
                log_p = P::load(t + c, k, 0);
                p = P::exp(log_p);
            }
            V e, w;
            if (Div == kDivForwardKL) {
                e = p > 0 ? p * (log_p - log_q) : zero;
                w = -p;
            } else if (Div == kDivReverseKL) {
                e = q > 0 ? q * (log_q - log_p) : zero;
                w = e;
                infinite += P::keep(log_p == neg_inf && z > neg_inf ? one : zero, k);
            } else if (Div == kDivTVD) {
                // sign(q − p) from q·Σs·Σt against p·Σs·Σt: products and a comparison, which
                // -ffp-contract cannot fuse into one side only, so equal inputs compare equal.
                const V a_side = Kind == kTeacherLogits ? es * row_sum_t : es;
                const V b_side = Kind == kTeacherLogits ? et * row_sum_s : p * row_sum_s;
                const V d = q - p;
                e = a_side > b_side ? half * d : (a_side < b_side ? -half * d : zero);
                w = a_side > b_side ? half * q : (a_side < b_side ? -half * q : zero);
            } else {
                const V lp = log_p + log_coef_p, lq = log_q + log_coef_q;
                const V hi = lp > lq ? lp : lq, lo = lp > lq ? lq : lp;
                const V log_m = hi > neg_inf ? hi + log1p_small<P>(P::exp(lo - hi)) : neg_inf;
                const V student_term = q > 0 ? q * (log_q - log_m) : zero;
                if (Div == kDivJSD) {
                    e = (p > 0 ? beta * p * (log_p - log_m) : zero) + rest * student_term;
                    w = rest * student_term;
                } else if (Div == kDivSkewKL) {
                    // (1−α)·q·p/m = p·e^(log(1−α) + log q − log m), an exponent ≤ 0 since m ≥ (1−α)·q.
                    e = p > 0 ? p * (log_p - log_m) : zero;
                    w = p > 0 && q > 0 ? -p * P::exp(lq - log_m) : zero;
                } else {
                    // α·q/m = e^(log α + log q − log m) ≤ 1 since m ≥ α·q.
                    e = student_term;
                    w = q > 0 ? student_term - q * P::exp(lq - log_m) : zero;
                }
            }
            acc += P::keep(e, k);
            w_sum += P::keep(w, k);
            if (Grad) P::store(teacher_exp + c, w, k);
        }
        const T loss = P::sum(infinite) > 0 ? T(INFINITY) : P::sum(acc);
        static_cast<T*>(a.row_loss)[i] = loss * factor;
        if (!Grad) continue;
        const T gs = row_scale<T>(a.scale, i);
        const T q_coef = inv_sum_s * P::sum(w_sum);
        for (int64_t c = 0; c < n; c += P::width) {
            const int64_t k = n - c < P::width ? n - c : P::width;
            P::store(g + c, (P::load(teacher_exp + c, k, 0) - P::load(g + c, k, 0) * q_coef) * gs, k);
        }
    }
}

template <typename T, int Kind, int Div>
static void divergence_grad(const DivergenceArgs& a, int64_t begin, int64_t end, T* scratch) {
    if (a.grad) divergence_rows<T, Kind, Div, true>(a, begin, end, scratch);
    else divergence_rows<T, Kind, Div, false>(a, begin, end, scratch);
}

template <typename T, int Kind>
static void divergence_kind(const DivergenceArgs& a, int64_t begin, int64_t end, T* scratch) {
    switch (a.divergence) {
        case kDivForwardKL: divergence_grad<T, Kind, kDivForwardKL>(a, begin, end, scratch); break;
        case kDivReverseKL: divergence_grad<T, Kind, kDivReverseKL>(a, begin, end, scratch); break;
        case kDivJSD: divergence_grad<T, Kind, kDivJSD>(a, begin, end, scratch); break;
        case kDivSkewKL: divergence_grad<T, Kind, kDivSkewKL>(a, begin, end, scratch); break;
        case kDivSkewReverseKL: divergence_grad<T, Kind, kDivSkewReverseKL>(a, begin, end, scratch); break;
        default: divergence_grad<T, Kind, kDivTVD>(a, begin, end, scratch);
    }
}

template <typename T>
static void divergence_typed(const DivergenceArgs& a, int64_t begin, int64_t end, void* scratch) {
    T* buffer = static_cast<T*>(scratch);
    switch (a.teacher_kind) {
        case kTeacherLogits: divergence_kind<T, kTeacherLogits>(a, begin, end, buffer); break;
        case kTeacherProbs: divergence_kind<T, kTeacherProbs>(a, begin, end, buffer); break;
        default: divergence_kind<T, kTeacherLogProbs>(a, begin, end, buffer);
    }
}

static void divergence(const DivergenceArgs& a, int64_t begin, int64_t end, void* scratch) {
    if (a.dtype == kFloat64) divergence_typed<double>(a, begin, end, scratch);
    else divergence_typed<float>(a, begin, end, scratch);
}

// Feature matching, rows [begin, end) (formulas in distill/losses/features.py, element by element as
// ATen writes them): with d = s − t, MSE d² (slope d), L1 |d| (slope sign d), smooth L1
// ½·|d|·|d| / β below β, else |d| − ½β (slope d / β, else sign d); the gradient is the slope times
// the row's scale (which carries MSE's factor 2). The cosine: 1 − (s·t) / √((|s|² + ε)(|t|² + ε)) per
// row, gradient (s · cos / (|s|² + ε) − t / √(…)) times the scale. Tail lanes load as 0, which adds 0.
// Whether to write the gradient is decided at run time, not by a template parameter: two instances
// may fuse the loss's multiply-adds differently, and the loss must not change with the gradient.
template <typename T, int Loss>
static void feature_rows(const FeatureArgs& a, int64_t begin, int64_t end) {
    typedef Pack<T> P;
    typedef typename P::V V;
    const int64_t n = a.classes;
    const T parameter = static_cast<T>(a.parameter);
    const V beta = P::splat(parameter), half_beta = P::splat(static_cast<T>(0.5) * parameter), half = P::splat(0.5);
    const V zero = P::splat(0), one = P::splat(1);
    for (int64_t i = begin; i < end; ++i) {
        const int64_t r = a.kept ? a.kept[i] : i;
        const T* s = static_cast<const T*>(a.student) + r * n;
        const T* t = static_cast<const T*>(a.teacher) + r * n;
        T* g = a.grad ? static_cast<T*>(a.grad) + r * n : nullptr;
        const T scale = row_scale<T>(a.scale, i);
        if (Loss == kFeatureCosine) {
            V dot = zero, ss = zero, tt = zero;
            for (int64_t c = 0; c < n; c += P::width) {
                const int64_t k = n - c < P::width ? n - c : P::width;
                const V sv = P::load(s + c, k, 0), tv = P::load(t + c, k, 0);
                dot += sv * tv;
                ss += sv * sv;
                tt += tv * tv;
            }
            const T student_norm = P::sum(ss) + parameter;
            const T denominator = std::sqrt(student_norm * (P::sum(tt) + parameter));
            const T cosine = P::sum(dot) / denominator;
            static_cast<T*>(a.row_loss)[i] = 1 - cosine;
            if (g) {
                const V ratio = P::splat(cosine / student_norm), denominator_v = P::splat(denominator), scale_v = P::splat(scale);
                for (int64_t c = 0; c < n; c += P::width) {
                    const int64_t k = n - c < P::width ? n - c : P::width;
                    const V sv = P::load(s + c, k, 0), tv = P::load(t + c, k, 0);
                    P::store(g + c, (sv * ratio - tv / denominator_v) * scale_v, k);
                }
            }
            continue;
        }
        V total = zero;
        const V scale_v = P::splat(scale);
        for (int64_t c = 0; c < n; c += P::width) {
            const int64_t k = n - c < P::width ? n - c : P::width;
            const V d = P::load(s + c, k, 0) - P::load(t + c, k, 0);
            const V z = d < zero ? -d : d;
            const V sign = (d > zero ? one : zero) - (d < zero ? one : zero);
            V element, slope;
            if (Loss == kFeatureMSE) {
                element = d * d;
                slope = d;
            } else if (Loss == kFeatureL1) {
                element = z;
                slope = sign;
            } else {
                element = z < beta ? half * z * z / beta : z - half_beta;
                slope = z < beta ? d / beta : sign;
            }
            total += element;
            if (g) P::store(g + c, slope * scale_v, k);
        }
        static_cast<T*>(a.row_loss)[i] = P::sum(total);
    }
}

template <typename T>
static void features_typed(const FeatureArgs& a, int64_t begin, int64_t end) {
    switch (a.loss) {
        case kFeatureMSE: feature_rows<T, kFeatureMSE>(a, begin, end); break;
        case kFeatureL1: feature_rows<T, kFeatureL1>(a, begin, end); break;
        case kFeatureSmoothL1: feature_rows<T, kFeatureSmoothL1>(a, begin, end); break;
        default: feature_rows<T, kFeatureCosine>(a, begin, end); break;
    }
}

static void features(const FeatureArgs& a, int64_t begin, int64_t end) {
    if (a.dtype == kFloat64) features_typed<double>(a, begin, end);
    else features_typed<float>(a, begin, end);
}
