// Hardy's addition to burn-tch: the gradients of a 2-D convolution from PyTorch's own
// convolution backward (at::convolution_backward, oneDNN on the CPU, cuDNN on CUDA). Without
// it burn computes them with its backend-generic fallback, which runs one convolution and one
// slice-assignment per group: a depthwise convolution of 240 channels became 240 convolutions.
#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <optional>

extern "C" {
// The gradient of `conv2d(input, weight)` (no bias; stride, padding, dilation: 2 values each,
// padding symmetric) with respect to `input` (which == 0) or `weight` (which == 1), given the
// gradient of its output. On success stores a new tensor in *out and returns null; on failure
// returns PyTorch's message, to be freed with free().
char *hardy_conv2d_backward(at::Tensor *grad_output, at::Tensor *input, at::Tensor *weight,
                            const int64_t *stride, const int64_t *padding,
                            const int64_t *dilation, int64_t groups, int which,
                            at::Tensor **out) {
  try {
    const std::array<bool, 3> mask = {which == 0, which == 1, false};
    const std::array<int64_t, 2> output_padding = {0, 0};
    auto grads = at::convolution_backward(
        *grad_output, *input, *weight, std::nullopt, at::IntArrayRef(stride, 2),
        at::IntArrayRef(padding, 2), at::IntArrayRef(dilation, 2), false,
        at::IntArrayRef(output_padding.data(), 2), groups, mask);
    *out = new at::Tensor(which == 0 ? std::get<0>(grads) : std::get<1>(grads));
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}
}
