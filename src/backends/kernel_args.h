// Backend op arguments -> the kernels' argument structs, in one place for every backend (private to
// src/backends).
#pragma once

#include "backends/backend.h"
#include "common/attention_args.h"

namespace xc2 {

// The kernels' attention arguments for tensors in `dtype`; positions on the device become pos_dev.
kernels::AttentionArgs kernel_args(const AttentionArgs& a, DType dtype);

}  // namespace xc2
