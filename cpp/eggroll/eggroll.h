// Umbrella header of the eggroll C++ core.
#pragma once
#include "eggroll/check.h"
#include "eggroll/embedding.h"
#include "eggroll/fitness.h"
#include "eggroll/int8.h"
#include "eggroll/isa.h"
#include "eggroll/key.h"
#include "eggroll/noise.h"
#include "eggroll/parallel.h"
#include "eggroll/perturb.h"
#include "eggroll/tensor.h"
#include "eggroll/update.h"
