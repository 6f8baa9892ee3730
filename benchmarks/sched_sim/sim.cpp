// llama.cpp's own memory planning, run against a device that follows ggml-cuda's rules.
//
// llama-server's arguments are parsed by llama.cpp's own parser; the model is loaded with
// no_alloc (header only, allocations simulated, as --fit does) on one device, "CUDA0", that
// answers like ggml-cuda on an H100 (compute capability 9.0) wherever the scheduler and the
// graph allocator ask: which ops it runs (all of them here), which ops it takes over from
// host weights (a batch of 32 rows or more), which buffers it can read (only its own), and
// how big a tensor's allocation is (ggml_backend_cuda_buffer_type_get_alloc_size: flash
// attention's f16 copies of a quantized K/V, quantized rows padded to 512).
// It prints every buffer type's model / context / compute bytes as JSON.
//
// Not modelled: ggml-cuda's graph_optimize fusions (MoE top-k and weighted reduction), which
// keep a few small tensors alive longer; the CUDA context, cuBLAS and the memory pool.
//
// Build and run: benchmarks/sched_sim/build.sh, then  sim MODEL.gguf -- LLAMA-SERVER-ARGS

#include "arg.h"
#include "common.h"
#include "ggml-backend-impl.h"
#include "ggml-backend.h"
#include "ggml.h"
#include "llama-ext.h"
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static const size_t VRAM = 81079ull * 1024 * 1024;
static const int64_t FATTN_KQ_STRIDE = 256;
static const int64_t MATRIX_ROW_PADDING = 512;

// ---------------------------------------------------------------- buffers

struct sim_buffer {
    void * data;
};

static void sim_buffer_free(ggml_backend_buffer_t buffer) {
    auto * ctx = (sim_buffer *) buffer->context;
    free(ctx->data);
    delete ctx;
}
static void * sim_buffer_base(ggml_backend_buffer_t buffer) {
    return ((sim_buffer *) buffer->context)->data;
}
static void sim_buffer_memset(ggml_backend_buffer_t, ggml_tensor *, uint8_t, size_t, size_t) {}
static void sim_buffer_set(ggml_backend_buffer_t, ggml_tensor *, const void *, size_t, size_t) {}
static void sim_buffer_get(ggml_backend_buffer_t, const ggml_tensor *, void * data, size_t, size_t size) {
    memset(data, 0, size);
}
static void sim_buffer_clear(ggml_backend_buffer_t, uint8_t) {}

static const ggml_backend_buffer_i sim_buffer_iface = {
    /* .free_buffer   = */ sim_buffer_free,
    /* .get_base      = */ sim_buffer_base,
    /* .init_tensor   = */ nullptr,
    /* .memset_tensor = */ sim_buffer_memset,
    /* .set_tensor    = */ sim_buffer_set,
    /* .get_tensor    = */ sim_buffer_get,
    /* .set_tensor_2d = */ nullptr,
    /* .get_tensor_2d = */ nullptr,
    /* .cpy_tensor    = */ nullptr,
    /* .clear         = */ sim_buffer_clear,
    /* .reset         = */ nullptr,
};

// ---------------------------------------------------------------- flash attention (fattn.cu)

static bool fa_vec_compiled(ggml_type k, ggml_type v) {
    // GGML_CUDA_FA_QUANTS default: q4_0-q4_0;q8_0-q8_0;f16-f16;bf16-bf16 (F32 reads as F16)
    if (k == GGML_TYPE_F32) k = GGML_TYPE_F16;
    if (v == GGML_TYPE_F32) v = GGML_TYPE_F16;
    return k == v && (k == GGML_TYPE_F16 || k == GGML_TYPE_Q4_0 || k == GGML_TYPE_Q8_0 || k == GGML_TYPE_BF16);
}

enum fattn_kernel { FATTN_NONE, FATTN_VEC, FATTN_MMA };

// ggml_cuda_get_best_fattn_kernel for compute capability 9.0 (Turing MMA, >= Ada)
static fattn_kernel best_fattn_kernel(const ggml_tensor * dst) {
    const ggml_tensor * Q = dst->src[0];
    const ggml_tensor * K = dst->src[1];
    const ggml_tensor * V = dst->src[2];
    const ggml_tensor * mask = dst->src[3];
    const int gqa_ratio = Q->ne[2] / K->ne[2];
    float max_bias = 0.0f;
    memcpy(&max_bias, (const float *) dst->op_params + 1, sizeof(float));
    bool gqa_opt_applies = gqa_ratio >= 2 && mask && max_bias == 0.0f && K->ne[1] % FATTN_KQ_STRIDE == 0;
    for (const ggml_tensor * t : {Q, K, V, mask}) {
        if (t == nullptr || ggml_is_quantized(t->type)) continue;
        for (int i = 1; i < GGML_MAX_DIMS; ++i) {
            if (t->nb[i] % 16 != 0) { gqa_opt_applies = false; break; }
        }
    }
    if (V->ne[0] != K->ne[0]) return FATTN_NONE;
    if (mask && mask->ne[2] != 1) return FATTN_NONE;
    const bool can_use_vec = Q->ne[0] <= 256 && Q->ne[0] % 64 == 0 && K->ne[1] % FATTN_KQ_STRIDE == 0;
    if (can_use_vec) {
        if (!ggml_is_quantized(K->type) && !ggml_is_quantized(V->type)) {
            // the sparse MMA decode path needs gqa_ratio > 4; none of the checked models has it
            if (Q->ne[1] == 1 && Q->ne[3] == 1 && !(gqa_ratio > 4 && (Q->ne[0] >= 256 || K->ne[1] >= 8192))) {
                return FATTN_VEC;
            }
        } else if (Q->ne[1] <= 2) {
            return FATTN_VEC;
        }
        if (!gqa_opt_applies && Q->ne[1] == 1) return FATTN_VEC;
    }
    return FATTN_MMA;
}

// ggml_cuda_flash_attn_ext_get_alloc_size + get_f16_extra_data
static size_t fattn_alloc_size(const ggml_tensor * dst) {
    const ggml_tensor * K = dst->src[1];
    const ggml_tensor * V = dst->src[2];
    const fattn_kernel kernel = best_fattn_kernel(dst);
    bool need_k = false, need_v = false;
    if (kernel == FATTN_MMA) {
        need_k = need_v = true;
    } else if (kernel == FATTN_VEC) {
        const bool fallback = !fa_vec_compiled(K->type, V->type);
        need_k = K->type == GGML_TYPE_F32 || fallback;
        need_v = V->type == GGML_TYPE_F32 || fallback;
    }
    size_t end = ggml_nbytes(dst);
    if (need_k && K->type != GGML_TYPE_F16) {
        end = GGML_PAD(end, 128) + ggml_nelements(K) * 2;
    }
    if (need_v && V->type != GGML_TYPE_F16) {
        end = GGML_PAD(end, 128) + ggml_nelements(V) * 2;
    }
    return end;
}

// ---------------------------------------------------------------- buffer types

static const char * sim_buft_name(ggml_backend_buffer_type_t) { return "CUDA0"; }
static ggml_backend_buffer_t sim_buft_alloc(ggml_backend_buffer_type_t buft, size_t size) {
    auto * ctx = new sim_buffer{size ? malloc(size) : nullptr};
    if (size && !ctx->data) {
        fprintf(stderr, "sim: cannot allocate %zu bytes for real\n", size);
        exit(3);
    }
    return ggml_backend_buffer_init(buft, sim_buffer_iface, ctx, size);
}
static size_t sim_buft_alignment(ggml_backend_buffer_type_t) { return 128; }
static size_t sim_buft_alloc_size(ggml_backend_buffer_type_t, const ggml_tensor * tensor) {
    size_t size = tensor->op == GGML_OP_FLASH_ATTN_EXT ? fattn_alloc_size(tensor) : ggml_nbytes(tensor);
    if (ggml_is_quantized(tensor->type) && tensor->ne[0] % MATRIX_ROW_PADDING != 0) {
        size += ggml_row_size(tensor->type, MATRIX_ROW_PADDING - tensor->ne[0] % MATRIX_ROW_PADDING);
    }
    return size;
}

static ggml_backend_buffer_type sim_buft = {
    /* .iface = */ {
        /* .get_name         = */ sim_buft_name,
        /* .alloc_buffer     = */ sim_buft_alloc,
        /* .alloc_buffer_n   = */ nullptr,
        /* .get_alignment    = */ sim_buft_alignment,
        /* .get_max_size     = */ nullptr,
        /* .get_alloc_size   = */ sim_buft_alloc_size,
        /* .get_alloc_size_n = */ nullptr,
        /* .is_host          = */ nullptr,
    },
    /* .device  = */ nullptr,
    /* .context = */ nullptr,
};

// pinned host memory (CUDA_Host): a host buffer type of the GPU device
static const char * host_buft_name(ggml_backend_buffer_type_t) { return "CUDA_Host"; }
static ggml_backend_buffer_t host_buft_alloc(ggml_backend_buffer_type_t buft, size_t size) {
    ggml_backend_buffer_t buf = ggml_backend_buft_alloc_buffer(ggml_backend_cpu_buffer_type(), size);
    if (buf) buf->buft = buft;
    return buf;
}
static size_t host_buft_alignment(ggml_backend_buffer_type_t) {
    return ggml_backend_buft_get_alignment(ggml_backend_cpu_buffer_type());
}
static bool host_buft_is_host(ggml_backend_buffer_type_t) { return true; }

static ggml_backend_buffer_type sim_host_buft = {
    /* .iface = */ {
        /* .get_name         = */ host_buft_name,
        /* .alloc_buffer     = */ host_buft_alloc,
        /* .alloc_buffer_n   = */ nullptr,
        /* .get_alignment    = */ host_buft_alignment,
        /* .get_max_size     = */ nullptr,
        /* .get_alloc_size   = */ nullptr,
        /* .get_alloc_size_n = */ nullptr,
        /* .is_host          = */ host_buft_is_host,
    },
    /* .device  = */ nullptr,
    /* .context = */ nullptr,
};

// ---------------------------------------------------------------- backend

static const char * sim_backend_name(ggml_backend_t) { return "CUDA0"; }
static void sim_backend_free(ggml_backend_t backend) { delete backend; }
static ggml_status sim_graph_compute(ggml_backend_t, ggml_cgraph *) { return GGML_STATUS_SUCCESS; }

static const ggml_backend_i sim_backend_iface = {
    /* .get_name            = */ sim_backend_name,
    /* .free                = */ sim_backend_free,
    /* .set_tensor_async    = */ nullptr,
    /* .get_tensor_async    = */ nullptr,
    /* .set_tensor_2d_async = */ nullptr,
    /* .get_tensor_2d_async = */ nullptr,
    /* .cpy_tensor_async    = */ nullptr,
    /* .synchronize         = */ nullptr,
    /* .graph_plan_create   = */ nullptr,
    /* .graph_plan_free     = */ nullptr,
    /* .graph_plan_update   = */ nullptr,
    /* .graph_plan_compute  = */ nullptr,
    /* .graph_compute       = */ sim_graph_compute,
    /* .event_record        = */ nullptr,
    /* .event_wait          = */ nullptr,
    /* .graph_optimize      = */ nullptr,
};

static ggml_guid_t sim_guid() {
    static ggml_guid guid = {0x0c, 0x0d, 0xa0, 0x51, 0x6d, 0x00, 0x48, 0x01, 0x9a, 0x11, 0x5e, 0xc0, 0x00, 0x00, 0x00, 0x01};
    return &guid;
}

// ---------------------------------------------------------------- device

static const char * sim_dev_name(ggml_backend_dev_t) { return "CUDA0"; }
static const char * sim_dev_desc(ggml_backend_dev_t) { return "simulated H100 80GB HBM3 (ggml-cuda rules)"; }
static void sim_dev_memory(ggml_backend_dev_t, size_t * free, size_t * total) { *free = VRAM; *total = VRAM; }
static enum ggml_backend_dev_type sim_dev_type(ggml_backend_dev_t) { return GGML_BACKEND_DEVICE_TYPE_GPU; }
static void sim_dev_props(ggml_backend_dev_t dev, ggml_backend_dev_props * props) {
    props->name = sim_dev_name(dev);
    props->description = sim_dev_desc(dev);
    props->type = GGML_BACKEND_DEVICE_TYPE_GPU;
    props->device_id = "0000:00:06.0";
    sim_dev_memory(dev, &props->memory_free, &props->memory_total);
    props->caps = {/* async */ false, /* host_buffer */ true, /* buffer_from_host_ptr */ false, /* events */ false};
}
static ggml_backend_t sim_dev_init(ggml_backend_dev_t dev, const char *) {
    return new ggml_backend{sim_guid(), sim_backend_iface, dev, nullptr};
}
static ggml_backend_buffer_type_t sim_dev_buft(ggml_backend_dev_t) { return &sim_buft; }
static ggml_backend_buffer_type_t sim_dev_host_buft(ggml_backend_dev_t) { return &sim_host_buft; }
static bool sim_dev_supports_op(ggml_backend_dev_t, const ggml_tensor * op) {
    if (op->op == GGML_OP_FLASH_ATTN_EXT) return best_fattn_kernel(op) != FATTN_NONE;
    return true;
}
static bool sim_dev_supports_buft(ggml_backend_dev_t, ggml_backend_buffer_type_t buft) { return buft == &sim_buft; }
// ggml_backend_cuda_device_offload_op: get_op_batch_size >= 32
static bool sim_dev_offload_op(ggml_backend_dev_t, const ggml_tensor * op) {
    int64_t batch;
    switch (op->op) {
        case GGML_OP_GET_ROWS: batch = 0; break;
        case GGML_OP_MUL_MAT: batch = op->ne[1]; break;
        case GGML_OP_MUL_MAT_ID:
        case GGML_OP_ROPE:
        case GGML_OP_ROPE_BACK: batch = op->ne[2]; break;
        default: batch = ggml_nrows(op);
    }
    const char * env = getenv("GGML_OP_OFFLOAD_MIN_BATCH");
    return batch >= (env ? atoi(env) : 32);
}

static ggml_backend_device sim_device = {
    /* .iface = */ {
        /* .get_name             = */ sim_dev_name,
        /* .get_description      = */ sim_dev_desc,
        /* .get_memory           = */ sim_dev_memory,
        /* .get_type             = */ sim_dev_type,
        /* .get_props            = */ sim_dev_props,
        /* .init_backend         = */ sim_dev_init,
        /* .get_buffer_type      = */ sim_dev_buft,
        /* .get_host_buffer_type = */ sim_dev_host_buft,
        /* .buffer_from_host_ptr = */ nullptr,
        /* .supports_op          = */ sim_dev_supports_op,
        /* .supports_buft        = */ sim_dev_supports_buft,
        /* .offload_op           = */ sim_dev_offload_op,
        /* .event_new            = */ nullptr,
        /* .event_free           = */ nullptr,
        /* .event_synchronize    = */ nullptr,
    },
    /* .reg     = */ nullptr,
    /* .context = */ nullptr,
};

static const char * sim_reg_name(ggml_backend_reg_t) { return "CUDA"; }
static size_t sim_reg_count(ggml_backend_reg_t) { return 1; }
static ggml_backend_dev_t sim_reg_device(ggml_backend_reg_t, size_t) { return &sim_device; }
static void * sim_reg_proc(ggml_backend_reg_t, const char *) { return nullptr; }

static ggml_backend_reg sim_reg = {
    /* .api_version = */ GGML_BACKEND_API_VERSION,
    /* .iface = */ {sim_reg_name, sim_reg_count, sim_reg_device, sim_reg_proc},
    /* .context = */ nullptr,
};

static void quiet(ggml_log_level level, const char * text, void *) {
    if (level >= GGML_LOG_LEVEL_WARN || getenv("SIM_VERBOSE")) fputs(text, stderr);
}

int main(int argc, char ** argv) {
    llama_log_set(quiet, nullptr);
    sim_buft.device = &sim_device;
    sim_host_buft.device = &sim_device;
    sim_device.reg = &sim_reg;
    ggml_backend_register(&sim_reg);

    common_params params;
    if (!common_params_parse(argc, argv, params, LLAMA_EXAMPLE_SERVER)) {
        return 2;
    }
    if (params.n_parallel < 0) {  // llama-server's auto: 4 slots sharing one KV stream
        params.n_parallel = 4;
        params.kv_unified = true;
    }
    llama_backend_init();
    llama_model_params mparams = common_model_params_to_llama(params);
    llama_context_params cparams = common_context_params_to_llama(params);
    mparams.no_alloc = true;
    llama_model * model = llama_model_load_from_file(params.model.path.c_str(), mparams);
    if (!model) return 4;
    llama_context * ctx = llama_init_from_model(model, cparams);
    if (!ctx) return 5;
    printf("{");
    bool first = true;
    for (const auto & [buft, mb] : llama_get_memory_breakdown(ctx)) {
        printf("%s\"%s\": {\"model\": %zu, \"context\": %zu, \"compute\": %zu}", first ? "" : ", ",
               ggml_backend_buft_name(buft), mb.model, mb.context, mb.compute);
        first = false;
    }
    printf("}\n");
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
