// RGB to YUV in fixed point, written for the compiler to vectorize: each loop reads pixels
// at a constant stride and does the same integer arithmetic for every one. On x86-64 Linux
// the conversion is also built for AVX2 and for x86-64-v2 (SSSE3: byte shuffles), picked
// at load time by the CPU it runs on; tools/converter_variants.sh times each.
#include "yuv.hpp"

#include <algorithm>
#include <cmath>

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define TURBOPIPE_CPU_VARIANTS __attribute__((target_clones("avx2", "arch=x86-64-v2", "default")))
#else
#define TURBOPIPE_CPU_VARIANTS
#endif

namespace turbopipe {
namespace {

// Fixed point in 16 bits, so that a SIMD register holds the most values: pixel values are
// scaled by 2^7 (a 2x2 block's sum of 4 by 2^5), weights by 2^15, and each product keeps its
// high 16 bits (one SIMD instruction, pmulhw on x86), levels scaled by 2^6:
// Y = (sum of the 3 products + offset) >> 6, and U and V alike.
constexpr int kValueShift = 7;
constexpr int kBlockShift = 5;
constexpr int kWeightShift = 15;
constexpr int kLevelShift = kValueShift + kWeightShift - 16;
// Keeping the high half rounds each product down, by half a unit (2^-6 level) on average:
// the offset adds one unit back for the 3 products, and half a level to round to nearest.
constexpr int kRounding = (1 << (kLevelShift - 1)) + 1;

struct Weights {
    std::int16_t r, g, b, offset;
};

struct Coefficients {
    Weights y, u, v;
};

std::int16_t fixed(double weight) {
    return static_cast<std::int16_t>(std::lround(weight * (1 << kWeightShift)));
}

std::int16_t offset(int level) {
    return static_cast<std::int16_t>((level << kLevelShift) + kRounding);
}

Coefficients coefficients(const YuvEncoding& e) {
    double luma = (e.full_range ? 255.0 : 219.0) / 255.0;
    double chroma = (e.full_range ? 255.0 : 224.0) / 255.0;
    double kg = 1.0 - e.kr - e.kb;
    Coefficients c;
    // Each set's weights sum to what white must give: gray stays gray, white stays white.
    c.y.r = fixed(e.kr * luma);
    c.y.b = fixed(e.kb * luma);
    c.y.g = static_cast<std::int16_t>(fixed(luma) - c.y.r - c.y.b);
    c.y.offset = offset(e.full_range ? 0 : 16);
    c.u.r = fixed(-e.kr / (2 * (1 - e.kb)) * chroma);
    c.u.g = fixed(-kg / (2 * (1 - e.kb)) * chroma);
    c.u.b = static_cast<std::int16_t>(-c.u.r - c.u.g);
    c.v.g = fixed(-kg / (2 * (1 - e.kr)) * chroma);
    c.v.b = fixed(-e.kb / (2 * (1 - e.kr)) * chroma);
    c.v.r = static_cast<std::int16_t>(-c.v.g - c.v.b);
    c.u.offset = c.v.offset = offset(128);
    return c;
}

// The high half of value * weight: the pattern compilers turn into pmulhw.
inline __attribute__((always_inline)) std::int16_t scaled(std::int16_t value, std::int16_t weight) {
    return static_cast<std::int16_t>(static_cast<std::int32_t>(value) * weight >> 16);
}

inline __attribute__((always_inline)) std::uint8_t level(const Weights& w, std::int16_t r,
                                                         std::int16_t g, std::int16_t b) {
    auto sum =
        static_cast<std::int16_t>(scaled(r, w.r) + scaled(g, w.g) + scaled(b, w.b) + w.offset);
    // Full range puts the chroma of pure red and blue at 255.5: kept at 255.
    return static_cast<std::uint8_t>(std::min(sum >> kLevelShift, 255));
}

// Rows go through in chunks of this many pixels, split into planes of R, G and B first:
// every loop after that reads 16-bit values one after the other.
constexpr int kChunk = 512;
static_assert(kChunk % 2 == 0, "a chunk holds whole 2x2 blocks");

struct Split {
    std::int16_t r[kChunk], g[kChunk], b[kChunk];
};

template <int C, bool BGR>
inline __attribute__((always_inline)) void split(const std::uint8_t* src, int n, Split& s) {
    constexpr int R = BGR ? 2 : 0, B = BGR ? 0 : 2;
    for (int x = 0; x < n; ++x) {
        s.r[x] = src[x * C + R];
        s.g[x] = src[x * C + 1];
        s.b[x] = src[x * C + B];
    }
}

inline __attribute__((always_inline)) void full(const Split& s, int n, const Weights& w,
                                                std::uint8_t* out) {
    for (int x = 0; x < n; ++x) {
        out[x] = level(w, static_cast<std::int16_t>(s.r[x] << kValueShift),
                       static_cast<std::int16_t>(s.g[x] << kValueShift),
                       static_cast<std::int16_t>(s.b[x] << kValueShift));
    }
}

// 4:2:0 chroma of the chunk from two rows: each value weighs a 2x2 block's sum. `step` is 1
// for planar U and V, 2 for nv12's interleaved UV.
template <int step>
inline __attribute__((always_inline)) void blocks(const Split& top, const Split& bottom, int n,
                                                  const Coefficients& k, std::uint8_t* u,
                                                  std::uint8_t* v) {
    for (int x = 0; x < n / 2; ++x) {
        auto sum = [&](const std::int16_t* a, const std::int16_t* b) {
            return static_cast<std::int16_t>((a[2 * x] + a[2 * x + 1] + b[2 * x] + b[2 * x + 1])
                                              << kBlockShift);
        };
        std::int16_t r = sum(top.r, bottom.r), g = sum(top.g, bottom.g), b = sum(top.b, bottom.b);
        u[x * step] = level(k.u, r, g, b);
        v[x * step] = level(k.v, r, g, b);
    }
}

struct Planes {
    std::uint8_t* y;
    std::uint8_t* u;
    std::uint8_t* v;
    std::ptrdiff_t chroma_stride;  // bytes from one chroma row to the next
    int chroma_step;               // bytes from one chroma value to the next
};

Planes planes(YuvLayout layout, int width, int height, std::uint8_t* out) {
    std::ptrdiff_t plane = static_cast<std::ptrdiff_t>(width) * height;
    std::uint8_t* chroma = out + plane;
    switch (layout) {
        case YuvLayout::Yuv444p:
            return {out, chroma, chroma + plane, width, 1};
        case YuvLayout::Nv12:
            return {out, chroma, chroma + 1, width, 2};
        case YuvLayout::Yuv420p:
            break;
    }
    return {out, chroma, chroma + plane / 4, width / 2, 1};
}

template <int C, bool BGR>
inline __attribute__((always_inline)) void convert(const RgbFrame& f, bool flip,
                                                   const Coefficients& k, YuvLayout layout,
                                                   const Planes& p) {
    auto source = [&](int y, int x) {
        return f.pixels + static_cast<std::ptrdiff_t>(flip ? f.height - 1 - y : y) * f.stride +
               static_cast<std::ptrdiff_t>(x) * C;
    };
    auto luma = [&](int y, int x) { return p.y + static_cast<std::ptrdiff_t>(y) * f.width + x; };
    auto chroma = [&](std::uint8_t* plane, int y, int x) {
        return plane + static_cast<std::ptrdiff_t>(y) * p.chroma_stride + x * p.chroma_step;
    };
    Split top, bottom;
    int rows = layout == YuvLayout::Yuv444p ? 1 : 2;
    for (int y = 0; y < f.height; y += rows) {
        for (int x = 0; x < f.width; x += kChunk) {
            int n = f.width - x < kChunk ? f.width - x : kChunk;
            split<C, BGR>(source(y, x), n, top);
            full(top, n, k.y, luma(y, x));
            if (rows == 1) {
                full(top, n, k.u, chroma(p.u, y, x));
                full(top, n, k.v, chroma(p.v, y, x));
                continue;
            }
            split<C, BGR>(source(y + 1, x), n, bottom);
            full(bottom, n, k.y, luma(y + 1, x));
            if (p.chroma_step == 2) {
                blocks<2>(top, bottom, n, k, chroma(p.u, y / 2, x / 2), chroma(p.v, y / 2, x / 2));
            } else {
                blocks<1>(top, bottom, n, k, chroma(p.u, y / 2, x / 2), chroma(p.v, y / 2, x / 2));
            }
        }
    }
}

TURBOPIPE_CPU_VARIANTS
void convert_frame(const RgbFrame& f, bool flip, const Coefficients& k, YuvLayout layout,
                   const Planes& p) {
    if (f.components == 4) {
        f.bgr ? convert<4, true>(f, flip, k, layout, p) : convert<4, false>(f, flip, k, layout, p);
    } else {
        f.bgr ? convert<3, true>(f, flip, k, layout, p) : convert<3, false>(f, flip, k, layout, p);
    }
}

}  // namespace

std::size_t yuv_frame_size(YuvLayout layout, int width, int height) {
    std::size_t pixels = static_cast<std::size_t>(width) * height;
    return layout == YuvLayout::Yuv444p ? 3 * pixels : pixels + pixels / 2;
}

void rgb_to_yuv(const RgbFrame& frame, bool flip, const YuvEncoding& encoding, YuvLayout layout,
                std::uint8_t* out) {
    convert_frame(frame, flip, coefficients(encoding), layout,
                  planes(layout, frame.width, frame.height, out));
}

}  // namespace turbopipe
