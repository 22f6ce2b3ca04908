// Fused CPU kernels for distill's softmax and sigmoid losses.
//
// Why: with eager torch ops each loss is several passes over (rows, C) memory, and the
// transcendental passes dominate; PyTorch's own fused cross-entropy already does the minimum its
// autograd graph allows. These kernels do each loss row by row in one exponential pass (a row of
// 32k float32 classes stays in L2 between the passes), and write the gradient in place.
//
// The library has a plain C ABI (called through ctypes, which releases the GIL): one entry point
// per loss family, each taking a struct of raw pointers that distill/native/kernels.py fills from
// tensors. distill_abi_size reports each struct's size, which the loader checks against its ctypes
// declarations before using the library.
// Rows are split over OpenMP threads. The library links libgomp.so.1, which is the soname of the
// OpenMP runtime that PyTorch's Linux wheels load, so once torch is imported both share one runtime
// and one worker pool: torch's workers keep spinning for a while after each parallel op, and separate
// threads of ours would compete with them for the cores. The value checks that precede a loss (row
// maxima and minima) are here too, so a whole loss call makes no parallel torch op. Non-finite results (a -inf student class where the
// target has mass, 0·log 0 corner cases) are left for the Python side to detect: it then reruns the
// torch path, which raises the precise error or applies the documented convention.

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <omp.h>

namespace {

constexpr int kFloat32 = 0;
constexpr int kFloat64 = 1;
constexpr int kTeacherLogits = 0;
constexpr int kTeacherProbs = 1;
constexpr int kTeacherLogProbs = 2;
constexpr int kLossKL = 0;
constexpr int kDivForwardKL = 0;
constexpr int kDivReverseKL = 1;
constexpr int kDivJSD = 2;
constexpr int kDivSkewKL = 3;
constexpr int kDivSkewReverseKL = 4;
constexpr int kDivTVD = 5;
constexpr int kFeatureMSE = 0;
constexpr int kFeatureL1 = 1;
constexpr int kFeatureSmoothL1 = 2;
constexpr int kFeatureCosine = 3;

}  // namespace

extern "C" {

// The gradient of row i is multiplied by per_row[i] (compute dtype) when given, else by `all`.
struct GradScale {
    const void* per_row;
    double all;
};

struct ExtremaArgs {
    int dtype;
    int64_t rows;
    int64_t classes;
    const void* values;  // (rows, classes)
    void* max;  // (rows)
    void* min;  // (rows)
};

struct HardArgs {
    int dtype;
    int64_t rows;  // rows to compute (kept rows)
    int64_t classes;
    const int64_t* kept;  // row i is student row kept[i]; null: row i
    const void* student;
    const void* row_max;  // per student row, or null
    const int64_t* labels;  // per student row
    int64_t ignore_index;
    const void* weight;  // (classes) or null
    double weight_sum;  // Σ weight (classes when unweighted)
    double epsilon;
    GradScale scale;
    void* grad;  // (student rows, classes) or null
    void* row_loss;  // (rows)
};

struct SoftArgs {
    int dtype;
    int64_t rows;
    int64_t classes;
    const int64_t* kept;
    const void* student;
    const void* teacher;
    const void* row_max;
    int teacher_kind;
    int loss;  // 0: KL divergence, 1: cross-entropy
    double inv_t;
    double factor;  // T² or 1, applied to the row losses
    const void* weight;  // cross-entropy class weights or null
    double weight_sum;
    double epsilon;
    GradScale scale;
    void* grad;
    void* row_loss;
    void* scratch;  // threads × classes elements of the compute dtype
};

struct BceArgs {
    int dtype;
    int64_t rows;
    int64_t classes;
    const int64_t* kept;
    const void* student;
    const void* teacher;
    int teacher_kind;  // logits or probs
    double inv_t;
    double factor;
    const void* weight;  // row r starts at weight + r * weight_row_stride; null when absent
    int64_t weight_row_stride;
    const void* pos_weight;
    int64_t pos_weight_row_stride;
    GradScale scale;
    void* grad;
    void* row_loss;
};

// The divergences of distill/losses/divergences.py between p (the teacher) and q = softmax(s / T).
struct DivergenceArgs {
    int dtype;
    int64_t rows;  // rows to compute (kept rows)
    int64_t classes;
    const int64_t* kept;  // row i is student row kept[i]; null: row i
    const void* student;
    const void* teacher;  // same layout as the student
    const void* row_max;  // per student row, or null
    int teacher_kind;
    int divergence;  // kDiv*
    double parameter;  // β (JSD) or α (skew KL, skew reverse KL)
    double inv_t;
    double factor;
    GradScale scale;
    void* grad;
    void* row_loss;
    void* scratch;  // 2 * classes elements per thread
};

// Feature matching between a student and a teacher of its shape (distill/losses/features.py).
struct FeatureArgs {
    int dtype;
    int64_t rows;
    int64_t classes;
    const int64_t* kept;
    const void* student;
    const void* teacher;  // same layout as the student
    int loss;  // kFeature*
    double parameter;  // smooth L1's β (> 0 and finite in the compute dtype); the cosine's ε
    GradScale scale;
    void* grad;
    void* row_loss;
};

}  // extern "C"

// Each instruction set's build: float32 packs of 16 lanes with AVX-512, of 8 otherwise.
#if defined(__GNUC__) && defined(__x86_64__)
#define DISTILL_HAVE_X86_BUILDS 1
#define DISTILL_FLOAT_LANES 16
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")
namespace avx512 {
#include "kernels_impl.h"
}  // namespace avx512
#pragma GCC pop_options
#undef DISTILL_FLOAT_LANES

#define DISTILL_FLOAT_LANES 8
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "kernels_impl.h"
}  // namespace avx2
#pragma GCC pop_options
#undef DISTILL_FLOAT_LANES
#endif

#define DISTILL_FLOAT_LANES 8
namespace baseline {
#include "kernels_impl.h"
}  // namespace baseline
#undef DISTILL_FLOAT_LANES

namespace {

constexpr int kBaseline = 0;
constexpr int kAvx2 = 2;
constexpr int kAvx512 = 3;

// The widest build this CPU runs; DISTILL_ISA=avx2 or baseline caps it (tests compare the builds).
int detect_isa() {
#ifdef DISTILL_HAVE_X86_BUILDS
    int isa = kBaseline;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = kAvx2;
    if (isa == kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512bw"))
        isa = kAvx512;
    const char* cap = std::getenv("DISTILL_ISA");
    if (cap != nullptr && std::strcmp(cap, "avx2") == 0 && isa > kAvx2) isa = kAvx2;
    if (cap != nullptr && std::strcmp(cap, "baseline") == 0) isa = kBaseline;
    return isa;
#else
    return kBaseline;
#endif
}

int isa() {
    static const int level = detect_isa();
    return level;
}

// Run fn(thread, begin, end) over [0, rows) on up to `threads` OpenMP threads (the caller's
// included). Small problems stay on the calling thread: waking workers costs more than they take.
template <typename Fn>
int parallel_rows(int64_t rows, int64_t classes, int threads, Fn fn) {
    constexpr int64_t kMinElementsPerThread = 1 << 15;
    const int64_t useful = rows * classes / kMinElementsPerThread;
    int64_t count = threads < 1 ? 1 : threads;
    count = count < rows ? count : rows;
    count = count < useful ? count : (useful < 1 ? 1 : useful);
    if (count <= 1) {
        fn(0, 0, rows);
        return 0;
    }
#pragma omp parallel num_threads(static_cast<int>(count))
    {
        const int64_t team = omp_get_num_threads();
        const int64_t thread = omp_get_thread_num();
        const int64_t per = (rows + team - 1) / team;
        const int64_t begin = thread * per;
        const int64_t end = begin + per < rows ? begin + per : rows;
        if (begin < end) fn(static_cast<int>(thread), begin, end);
    }
    return 0;
}

// Thread `thread`'s share of a scratch buffer holding `per_thread` elements of `dtype` per thread.
void* thread_scratch(void* scratch, int thread, int64_t per_thread, int dtype) {
    const size_t element = dtype == kFloat64 ? sizeof(double) : sizeof(float);
    return static_cast<char*>(scratch) + static_cast<size_t>(thread) * static_cast<size_t>(per_thread) * element;
}

}  // namespace

// Calls the build of a kernel for instruction set `level` (see isa()).
#ifdef DISTILL_HAVE_X86_BUILDS
#define DISTILL_DISPATCH(level, kernel, ...)                                                                  \
    ((level) == kAvx512 ? avx512::kernel(__VA_ARGS__)                                                          \
                        : (level) == kAvx2 ? avx2::kernel(__VA_ARGS__) : baseline::kernel(__VA_ARGS__))
#else
#define DISTILL_DISPATCH(level, kernel, ...) ((void)(level), baseline::kernel(__VA_ARGS__))
#endif

extern "C" {

// Returns 0 when every value is finite (no NaN or infinity anywhere), else 1: the common case then
// needs no further look at the extrema. `min` may be null when the caller needs only the maxima.
__attribute__((visibility("default"))) int distill_extrema(const ExtremaArgs* args, int threads) {
    const ExtremaArgs& a = *args;
    const int level = isa();
    std::atomic<bool> finite{true};
    parallel_rows(a.rows, a.classes, threads, [&a, level, &finite](int, int64_t begin, int64_t end) {
        if (!DISTILL_DISPATCH(level, extrema, a, begin, end)) finite.store(false, std::memory_order_relaxed);
    });
    return finite.load() ? 0 : 1;
}

// Hard labels against `classes` classes: 0 when every label is a class index and none equals
// ignore_index, 1 when every label is a class index or ignore_index and some are ignore_index, 2 when
// some label is neither (the caller then finds which, for its error message).
__attribute__((visibility("default"))) int distill_check_labels(const int64_t* labels, int64_t n, int64_t classes, int64_t ignore_index) {
    bool ignored = false;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t y = labels[i];
        if (y == ignore_index) ignored = true;
        else if (y < 0 || y >= classes) return 2;
    }
    return ignored ? 1 : 0;
}

__attribute__((visibility("default"))) int distill_ce_hard(const HardArgs* args, int threads) {
    const HardArgs& a = *args;
    const int level = isa();
    return parallel_rows(a.rows, a.classes, threads, [&a, level](int, int64_t begin, int64_t end) {
        DISTILL_DISPATCH(level, ce_hard, a, begin, end);
    });
}

__attribute__((visibility("default"))) int distill_soft(const SoftArgs* args, int threads) {
    const SoftArgs& a = *args;
    const int level = isa();
    return parallel_rows(a.rows, a.classes, threads, [&a, level](int thread, int64_t begin, int64_t end) {
        DISTILL_DISPATCH(level, soft, a, begin, end, thread_scratch(a.scratch, thread, a.classes, a.dtype));
    });
}

__attribute__((visibility("default"))) int distill_bce(const BceArgs* args, int threads) {
    const BceArgs& a = *args;
    const int level = isa();
    return parallel_rows(a.rows, a.classes, threads, [&a, level](int, int64_t begin, int64_t end) {
        DISTILL_DISPATCH(level, bce, a, begin, end);
    });
}

__attribute__((visibility("default"))) int distill_divergence(const DivergenceArgs* args, int threads) {
    const DivergenceArgs& a = *args;
    const int level = isa();
    return parallel_rows(a.rows, a.classes, threads, [&a, level](int thread, int64_t begin, int64_t end) {
        DISTILL_DISPATCH(level, divergence, a, begin, end, thread_scratch(a.scratch, thread, 2 * a.classes, a.dtype));
    });
}

// Returns 1 (the caller then computes on torch ops) for a smooth L1 β that is 0 or infinite in the
// compute dtype: PyTorch's answer there is L1's, or a limit, not this formula's.
__attribute__((visibility("default"))) int distill_features(const FeatureArgs* args, int threads) {
    const FeatureArgs& a = *args;
    if (a.loss == kFeatureSmoothL1) {
        const double beta = a.dtype == kFloat64 ? a.parameter : static_cast<double>(static_cast<float>(a.parameter));
        if (!(beta > 0) || !std::isfinite(beta)) return 1;
    }
    const int level = isa();
    return parallel_rows(a.rows, a.classes, threads, [&a, level](int, int64_t begin, int64_t end) {
        DISTILL_DISPATCH(level, features, a, begin, end);
    });
}

// Benchmarks only: e^x (op 0) or log x (op 1) of a (rows, classes) float32 buffer (see probe).
__attribute__((visibility("default"))) int distill_probe(int op, const float* in, float* out, int64_t rows, int64_t classes, int threads) {
    const int level = isa();
    return parallel_rows(rows, classes, threads, [=](int, int64_t begin, int64_t end) {
        DISTILL_DISPATCH(level, probe, op, in, out, classes, begin, end);
    });
}

__attribute__((visibility("default"))) int distill_isa() { return isa(); }

// sizeof the named argument struct, or -1 for a name this library does not know.
__attribute__((visibility("default"))) int64_t distill_abi_size(const char* name) {
    if (std::strcmp(name, "GradScale") == 0) return sizeof(GradScale);
    if (std::strcmp(name, "ExtremaArgs") == 0) return sizeof(ExtremaArgs);
    if (std::strcmp(name, "HardArgs") == 0) return sizeof(HardArgs);
    if (std::strcmp(name, "SoftArgs") == 0) return sizeof(SoftArgs);
    if (std::strcmp(name, "BceArgs") == 0) return sizeof(BceArgs);
    if (std::strcmp(name, "DivergenceArgs") == 0) return sizeof(DivergenceArgs);
    if (std::strcmp(name, "FeatureArgs") == 0) return sizeof(FeatureArgs);
    return -1;
}

}  // extern "C"
