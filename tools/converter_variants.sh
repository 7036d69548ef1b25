#!/usr/bin/env bash
# Times the native RGB to YUV converter (src/native/yuv.cpp) alone, one variant per CPU
# level, on one core: 1080p frames, each source layout and output layout, 60 runs each.
#   tools/converter_variants.sh [width height]
set -euo pipefail
cd "$(dirname "$0")/.."
width=${1:-1920} height=${2:-1080}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/time.cpp" <<'CPP'
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "yuv.hpp"
using namespace turbopipe;
int main(int argc, char** argv) {
    int width = std::atoi(argv[1]), height = std::atoi(argv[2]);
    const char* names[] = {"yuv420p", "nv12", "yuv444p"};
    for (int components : {3, 4}) {
        std::vector<std::uint8_t> rgb(std::size_t(width) * height * components);
        for (std::size_t i = 0; i < rgb.size(); ++i) rgb[i] = std::uint8_t(i * 7 + i / 1000);
        RgbFrame frame{rgb.data(), std::ptrdiff_t(width) * components, width, height, components, false};
        for (int layout = 0; layout < 3; ++layout) {
            std::vector<std::uint8_t> out(yuv_frame_size(YuvLayout(layout), width, height));
            std::vector<double> ms;
            for (int run = 0; run < 60; ++run) {
                auto start = std::chrono::steady_clock::now();
                rgb_to_yuv(frame, true, {0.2126, 0.0722, false}, YuvLayout(layout), out.data());
                ms.push_back(std::chrono::duration<double, std::milli>(
                    std::chrono::steady_clock::now() - start).count());
            }
            std::sort(ms.begin(), ms.end());
            std::printf("  %s -> %-8s %5.2f ms median (%.2f-%.2f)\n", components == 3 ? "rgb24" : "rgba ",
                        names[layout], ms[ms.size() / 2], ms.front(), ms.back());
        }
    }
}
CPP
# Each variant with the CPU flag it needs.
for variant in default:lm arch=x86-64-v2:sse4_2 avx2:avx2; do
  name=${variant%:*} flag=${variant#*:}
  sed "s/target_clones([^)]*)/target(\"$name\")/" src/native/yuv.cpp > "$work/yuv.cpp"
  g++ -O3 -std=c++17 -Isrc/native "$work/time.cpp" "$work/yuv.cpp" -o "$work/time"
  echo "$name, ${width}x${height}:"
  if grep -qw "$flag" /proc/cpuinfo; then
    taskset -c 0 "$work/time" "$width" "$height"
  else
    echo "  (this CPU lacks $flag)"
  fi
done
