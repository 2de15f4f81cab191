// Host emulation (tools/cuda_emu): the real header is cuda_runtime.h.
#pragma once
#include "cuda_runtime.h"
