// RGB to YUV: the video writer's conversion of frames into what its FFmpeg encodes, so that
// FFmpeg neither converts nor reads twice the bytes. Knows nothing of Python.
#pragma once

#include <cstddef>
#include <cstdint>

namespace turbopipe {

enum class YuvLayout { Yuv420p, Nv12, Yuv444p };

// Where the source pixels are: row y (top to bottom, before any flip) starts at
// pixels + y * stride; each pixel is `components` bytes (3 or 4, the 4th ignored), red
// first, or blue first when bgr.
struct RgbFrame {
    const std::uint8_t* pixels;
    std::ptrdiff_t stride;
    int width;
    int height;
    int components;
    bool bgr;
};

// How Y, U and V are made from R, G and B: the matrix's (Kr, Kb) and the range.
struct YuvEncoding {
    double kr;
    double kb;
    bool full_range;
};

// The bytes of a frame of this layout: planes back to back, as FFmpeg's rawvideo reads it.
std::size_t yuv_frame_size(YuvLayout layout, int width, int height);

// Writes the frame, converted, into out (yuv_frame_size bytes), rows flipped upside down
// when flip. Chroma of yuv420p and nv12 is the mean of each 2x2 block (centre siting);
// 420 layouts need an even width and height. Rounds to nearest.
void rgb_to_yuv(const RgbFrame& frame, bool flip, const YuvEncoding& encoding, YuvLayout layout,
                std::uint8_t* out);

}  // namespace turbopipe
