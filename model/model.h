/*
 * model: GPT-2 chess models as TransformerLens (TL) sees them.
 *
 * Loads a HuggingFace GPT-2 directory (config.json, model.safetensors, tokenizer.json), applies
 * TL's from_pretrained weight processing (fold_ln, center_writing_weights, center_unembed,
 * fold_value_biases; each switchable) and runs the forward pass with TL's hook points.
 * Runs are declarative: a model_request names the tokens, the hooks to cache, the activations to
 * replace, the layers to run and (for exact prefix-reusing activation patching) the positions to
 * recompute. The engine executes the request on a model_backend, a table of device operations
 * over opaque buffers, so the same request runs on the CPU backend here and on the CUDA backend
 * in gpu/. Results come back as a model_cache of device buffers that the caller downloads
 * explicitly. The safetensors reader and writer used for weights, goldens and CLI outputs, and
 * the tokenizer.json WordLevel tokenizer, live here too.
 *
 * Shapes follow TL: B batch, T positions, D d_model, H heads, Dh d_head, M d_mlp, V vocab,
 * L layers. Every fallible function returns 0 or a negative COMMON_ERR_* code and fills `err`
 * (COMMON_ERR_LEN bytes, NULL allowed).
 */
#ifndef CHESSLENS_MODEL_H
#define CHESSLENS_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* ------------------------------------------------------------------------------------------ */
/* Shapes and dtypes                                                                           */

#define MODEL_MAX_DIMS 4

typedef struct model_shape {
    int ndim;                    /* 0..MODEL_MAX_DIMS */
    size_t dims[MODEL_MAX_DIMS]; /* outermost first (row-major) */
} model_shape;

/* Number of elements (1 for ndim 0). */
size_t model_shape_numel(const model_shape *s);
/* True when both shapes have the same rank and dimensions. */
bool model_shape_equal(const model_shape *a, const model_shape *b);
/* Writes "[2, 3, 4]" into buf (always NUL-terminated); returns buf. */
char *model_shape_format(const model_shape *s, char *buf, size_t cap);

typedef enum model_dtype {
    MODEL_DTYPE_F32,
    MODEL_DTYPE_F16,
    MODEL_DTYPE_BF16,
    MODEL_DTYPE_I32,
    MODEL_DTYPE_I64,
} model_dtype;

/* Size in bytes of one element. */
size_t model_dtype_size(model_dtype t);
/* The safetensors spelling ("F32", ...). */
const char *model_dtype_name(model_dtype t);

/* ------------------------------------------------------------------------------------------ */
/* safetensors: reading (memory-mapped) and writing                                            */

typedef struct model_st_file model_st_file;

/* Maps a safetensors file and validates its header: JSON syntax, dtypes, shapes whose element
 * and byte counts fit in size_t (with zero dimensions counted as one, so that any product of
 * dimensions a reader forms fits too), data offsets inside the file, sizes consistent with shape
 * x dtype, no two tensors sharing a byte (empty tensors hold none). A path that is not a regular
 * file (a directory, a FIFO) is INVALID. Errors name the file and, where one is at fault, the
 * tensor. Every tensor of an opened file reads within the file's bytes. */
int model_st_open(model_st_file **out, const char *path, char *err);
/* The same validation over `len` bytes of a safetensors file already in memory; `name` stands
 * for the file in messages. The bytes are borrowed, not copied: they must stay valid and
 * unchanged until model_st_close. */
int model_st_open_buffer(model_st_file **out, const char *name, const void *data, size_t len,
                         char *err);
/* Unmaps and frees; accepts NULL and NULL *f. */
void model_st_close(model_st_file **f);
/* Number of tensors (the __metadata__ entry is not a tensor). */
size_t model_st_count(const model_st_file *f);
/* Name of tensor i (header order), owned by f. */
const char *model_st_name(const model_st_file *f, size_t i);
/* Index of the named tensor, or -1. */
long model_st_find(const model_st_file *f, const char *name);
/* Dtype and shape of tensor i. */
void model_st_info(const model_st_file *f, size_t i, model_dtype *dtype, model_shape *shape);
/* Raw little-endian bytes of tensor i inside the mapping (valid until close) and their count. */
const void *model_st_data(const model_st_file *f, size_t i, size_t *bytes);
/* A __metadata__ value, or NULL when absent; owned by f. */
const char *model_st_metadata(const model_st_file *f, const char *key);
/* The __metadata__ keys in name order: *out ([*n] pointers owned by f; the caller frees the
 * array only). */
int model_st_metadata_keys(const model_st_file *f, const char ***out, size_t *n, char *err);
/* Converts the named tensor (F32, F16 or BF16) to float32 into dst, which holds `cap` floats;
 * *shape (may be NULL) receives its shape. NOT_FOUND names the tensor; INVALID when cap is too
 * small; UNSUPPORTED for integer tensors. */
int model_st_read_f32(const model_st_file *f, const char *name, float *dst, size_t cap,
                      model_shape *shape, char *err);
/* Same for integer tensors (I32 or I64, values must fit int32) into int32. */
int model_st_read_i32(const model_st_file *f, const char *name, int32_t *dst, size_t cap,
                      model_shape *shape, char *err);

typedef struct model_st_writer model_st_writer;

int model_st_writer_new(model_st_writer **out, char *err);
void model_st_writer_destroy(model_st_writer **w);
/* Adds a tensor; the bytes (numel x dtype size, little-endian) are copied. Names must be
 * unique and not "__metadata__". */
int model_st_writer_add(model_st_writer *w, const char *name, model_dtype dtype,
                        const model_shape *shape, const void *data, char *err);
/* Adds a float32 tensor stored as dtype F32, F16 or BF16 (round to nearest even). */
int model_st_writer_add_f32(model_st_writer *w, const char *name, model_dtype dtype,
                            const model_shape *shape, const float *data, char *err);
/* Sets a __metadata__ string entry (copied; replaces an earlier value for key). */
int model_st_writer_set_metadata(model_st_writer *w, const char *key, const char *value, char *err);
/* Writes the file (header, then data in insertion order, 8-byte aligned header). */
int model_st_writer_write(const model_st_writer *w, const char *path, char *err);

/* float <-> half conversions used by the reader and writer (round to nearest even). */
float model_f16_to_f32(uint16_t h);
uint16_t model_f32_to_f16(float f);
float model_bf16_to_f32(uint16_t h);
uint16_t model_f32_to_bf16(float f);

/* ------------------------------------------------------------------------------------------ */
/* Tokenizer (tokenizer.json, HF `tokenizers` WordLevel)                                      */

typedef struct model_tokenizer model_tokenizer;

/* Character span [start, end) of a token in the input text, counted in Unicode characters as
 * HF offsets are; tokens inserted by the template (BOS) get (0, 0). */
typedef struct model_token_span {
    size_t start;
    size_t end;
} model_token_span;

/* Loads tokenizer.json: WordLevel vocab and unk_token, added tokens (split out before
 * pre-tokenization), a pre-tokenizer made of Whitespace / WhitespaceSplit / Split(regex "\d",
 * any behaviour) steps, and a TemplateProcessing post-processor that prepends one special token
 * (the BOS). Anything else is refused with UNSUPPORTED naming the part. */
int model_tokenizer_load(model_tokenizer **out, const char *path, char *err);
/* The same from the `len` bytes of a tokenizer.json in memory (need not be NUL-terminated);
 * `name` stands for the file in messages. Ids must lie in [0, MODEL_MAX_VOCAB). Loading takes
 * time linear in the size of the vocabulary (sorting it aside). */
int model_tokenizer_parse(model_tokenizer **out, const char *name, const char *json, size_t len,
                          char *err);
void model_tokenizer_destroy(model_tokenizer **t);
/* Number of ids (max id + 1 over vocab and added tokens). */
size_t model_tokenizer_vocab_size(const model_tokenizer *t);
/* Token string of id, or NULL when out of range / unused. Owned by t. */
const char *model_tokenizer_token(const model_tokenizer *t, int32_t id);
/* Id of an exact token string, or -1. */
int32_t model_tokenizer_id(const model_tokenizer *t, const char *token);
/* BOS id (the template's special token; else "<s>"), or -1 when there is none. */
int32_t model_tokenizer_bos(const model_tokenizer *t);
/* Pad id ("<pad>", the right-padding value of a batch; 0 when absent). */
int32_t model_tokenizer_pad(const model_tokenizer *t);
/* Encodes text as TL's to_tokens does for one string (prepend_bos adds exactly one BOS).
 * Writes up to `cap` ids (and spans, when spans is not NULL); *n receives the token count even
 * when it exceeds cap (then INVALID). A piece absent from the vocabulary is an error naming the
 * piece and its character offset (TL would silently map it to unk). */
int model_tokenizer_encode(const model_tokenizer *t, const char *text, bool prepend_bos,
                           int32_t *ids, model_token_span *spans, size_t cap, size_t *n, char *err);
/* Decodes ids as HF does with decoder null: token strings joined by one space (specials kept).
 * Writes a NUL-terminated string of at most cap bytes; INVALID for an unknown id or overflow. */
int model_tokenizer_decode(const model_tokenizer *t, const int32_t *ids, size_t n, char *out,
                           size_t cap, char *err);

/* ------------------------------------------------------------------------------------------ */
/* Configuration, processing, loading                                                          */

typedef struct model_config {
    int n_layers;     /* L */
    int d_model;      /* D */
    int n_heads;      /* H */
    int d_head;       /* Dh = D / H */
    int d_mlp;        /* M = 4 D (TL ignores n_inner for GPT-2) */
    int n_ctx;        /* maximum T (config.json n_ctx, as TL reads it) */
    int n_positions;  /* rows of wpe in the file (>= n_ctx; extra rows are dropped) */
    int d_vocab;      /* V */
    float eps;        /* layer_norm_epsilon, inside the sqrt */
    float attn_scale; /* sqrt(d_head); scores are divided by it */
} model_config;

/* Limits on the config.json values, generous for any GPT-2 (GPT-2 XL has 48 layers, d_model
 * 1600, 25 heads, a vocabulary of 50257 and n_ctx 1024). A value outside them is refused naming
 * the key before anything is allocated from it; with them every product of dimensions the loader
 * forms (V x D, L x D x 4D, ...) fits easily in size_t. */
#define MODEL_MAX_LAYERS 256
#define MODEL_MAX_D_MODEL 16384
#define MODEL_MAX_HEADS 256
#define MODEL_MAX_VOCAB (1 << 20)
#define MODEL_MAX_CTX (1 << 16)
/* layer_norm_epsilon must lie in [MODEL_MIN_EPS, MODEL_MAX_EPS] (GPT-2 uses 1e-5; smaller
 * values round towards 0 in float32, larger ones wash out the normalisation). */
#define MODEL_MIN_EPS 1e-12
#define MODEL_MAX_EPS 1e-1

/* Parses the `len` bytes of a HF GPT-2 config.json (need not be NUL-terminated) the way
 * model_load does; `name` stands for the file in messages. Every key it reads is checked:
 * integers against the MODEL_MAX_* limits, layer_norm_epsilon against its range, switches must
 * be booleans; a bad value is INVALID (UNSUPPORTED for what chesslens does not implement)
 * naming the key. *cfg is written only on success. */
int model_config_parse(model_config *cfg, const char *name, const char *json, size_t len,
                       char *err);

/* TL's from_pretrained switches. Defaults (model_processing_default) are all true;
 * model_processing_none() is from_pretrained_no_processing. Applied in the order listed. */
typedef struct model_processing {
    bool fold_ln;
    bool center_writing_weights;
    bool center_unembed;
    bool fold_value_biases;
} model_processing;

model_processing model_processing_default(void);
model_processing model_processing_none(void);

typedef struct model model;

/* Loads dir/config.json, dir/model.safetensors (memory-mapped; F32/F16/BF16; names with or
 * without "transformer."; lm_head tied to wte) and dir/tokenizer.json, converts to TL
 * parameters in float32 on the host and applies `proc` (NULL = TL defaults). Refuses
 * unsupported configs (activation other than gelu_new, scale_attn_by_inverse_layer_idx, D not a
 * multiple of H, n_positions < n_ctx, tokenizer vocabulary larger than vocab_size, values
 * outside the MODEL_MAX_* limits, ...) with UNSUPPORTED/INVALID naming the key; missing files
 * NOT_FOUND naming the path; missing or mis-shaped tensors naming the tensor and both shapes.
 * Every tensor is checked against the config before the parameters are allocated, so what is
 * allocated is bounded by what the file holds. */
int model_load(model **out, const char *dir, const model_processing *proc, char *err);
void model_destroy(model **m);
const model_config *model_get_config(const model *m);
const model_processing *model_get_processing(const model *m);
const model_tokenizer *model_get_tokenizer(const model *m);
/* Processed host parameter by TL name ("embed.W_E" [V,D], "pos_embed.W_pos" [n_ctx,D],
 * "blocks.0.attn.W_Q" [H,D,Dh], "blocks.0.attn.b_Q" [H,Dh] (K, V alike), "blocks.0.attn.W_O"
 * [H,Dh,D], "blocks.0.attn.b_O" [D], "blocks.0.mlp.W_in" [D,M], "b_in" [M], "W_out" [M,D],
 * "b_out" [D], "blocks.0.ln1.w"/".b", "ln2.w/.b", "ln_final.w/.b" [D] (only without fold_ln),
 * "unembed.W_U" [D,V], "unembed.b_U" [V]). Returns NULL when there is no such parameter;
 * *shape (may be NULL) receives its shape. Owned by m. */
const float *model_param(const model *m, const char *name, model_shape *shape);
/* Parameters in a fixed order (embed, pos_embed, blocks by layer, ln_final, unembed). */
size_t model_param_count(const model *m);
const char *model_param_name(const model *m, size_t i);
/* Total number of scalars over all parameters. */
size_t model_param_numel(const model *m);

/* Writes a random-weight GPT-2 model in the HF layout as the directory dir:
 * config.json (n_ctx and n_positions), model.safetensors ("transformer."-prefixed names, Conv1D
 * [in,out] layouts, no lm_head) in dtype F32/F16/BF16, and tokenizer.json with the 77-token UCI
 * chess vocabulary followed by "<extra_0>".. up to d_vocab (d_vocab < 77 is INVALID). Matrices
 * are N(0, 0.02), LN weights 1 + N(0, 0.1), biases N(0, 0.02); d_mlp must be 4 d_model.
 * Deterministic in seed. The files are written in a staging directory beside dir and renamed to
 * dir when complete, so a failure leaves nothing behind. An existing dir holding only model
 * files (or nothing) is replaced; one holding anything else is refused (INVALID). */
int model_write_random(const char *dir, const model_config *cfg, uint64_t seed, model_dtype dtype,
                       char *err);

/* ------------------------------------------------------------------------------------------ */
/* Hook points                                                                                 */

typedef enum model_hook_kind {
    MODEL_HOOK_EMBED,     /* hook_embed [B,T,D] */
    MODEL_HOOK_POS_EMBED, /* hook_pos_embed [B,T,D] */
    /* per layer, blocks.{l}. ... in firing order */
    MODEL_HOOK_RESID_PRE,      /* hook_resid_pre [B,T,D] */
    MODEL_HOOK_LN1_SCALE,      /* ln1.hook_scale [B,T,1] */
    MODEL_HOOK_LN1_NORMALIZED, /* ln1.hook_normalized [B,T,D] */
    MODEL_HOOK_Q,              /* attn.hook_q [B,T,H,Dh] */
    MODEL_HOOK_K,              /* attn.hook_k [B,T,H,Dh] */
    MODEL_HOOK_V,              /* attn.hook_v [B,T,H,Dh] */
    MODEL_HOOK_ATTN_SCORES,    /* attn.hook_attn_scores [B,H,T,T], -inf where masked */
    MODEL_HOOK_PATTERN,        /* attn.hook_pattern [B,H,T,T] */
    MODEL_HOOK_Z,              /* attn.hook_z [B,T,H,Dh] */
    MODEL_HOOK_RESULT,         /* attn.hook_result [B,T,H,D], per head, no b_O; only if asked */
    MODEL_HOOK_ATTN_OUT,       /* hook_attn_out [B,T,D] */
    MODEL_HOOK_RESID_MID,      /* hook_resid_mid [B,T,D] */
    MODEL_HOOK_LN2_SCALE,      /* ln2.hook_scale [B,T,1] */
    MODEL_HOOK_LN2_NORMALIZED, /* ln2.hook_normalized [B,T,D] */
    MODEL_HOOK_MLP_PRE,        /* mlp.hook_pre [B,T,M] */
    MODEL_HOOK_MLP_POST,       /* mlp.hook_post [B,T,M] */
    MODEL_HOOK_MLP_OUT,        /* hook_mlp_out [B,T,D] */
    MODEL_HOOK_RESID_POST,     /* hook_resid_post [B,T,D] */
    /* after the blocks */
    MODEL_HOOK_LN_FINAL_SCALE,      /* ln_final.hook_scale [B,T,1] */
    MODEL_HOOK_LN_FINAL_NORMALIZED, /* ln_final.hook_normalized [B,T,D] */
    MODEL_HOOK_LOGITS,              /* logits [B,T,V] (not a TL hook; the model output) */
    MODEL_HOOK_KIND_COUNT
} model_hook_kind;

/* A hook point: kind plus layer (-1 for kinds outside the blocks). */
typedef struct model_hook {
    model_hook_kind kind;
    int layer;
} model_hook;

/* True for the per-block kinds. */
bool model_hook_kind_in_block(model_hook_kind k);
/* Parses a full TL name ("blocks.3.attn.hook_pattern", "ln_final.hook_scale", "logits"); the
 * layer is checked against cfg when cfg is not NULL. The error names the hook. */
int model_hook_parse(const char *name, const model_config *cfg, model_hook *out, char *err);
/* Parses a list of hooks: "all" (every hook of cfg, in dense order) or TL names separated by
 * commas, each kept once in the order given. On success *out ([*n] hooks, caller frees) and *n
 * (>= 1) are set; a list that names no hook ("", ",,") is INVALID, an unknown name fails as in
 * model_hook_parse. */
int model_hook_list_parse(const char *spec, const model_config *cfg, model_hook **out, size_t *n,
                          char *err);
/* Writes the full TL name into buf (always NUL-terminated); returns buf. */
char *model_hook_name(model_hook h, char *buf, size_t cap);
/* Number of hook points of a model (2 + 18 L + 3, counting hook_result and logits). */
size_t model_hook_count(const model_config *cfg);
/* Dense index in firing order (0..model_hook_count-1), and back. */
size_t model_hook_index(const model_config *cfg, model_hook h);
model_hook model_hook_at(const model_config *cfg, size_t index);
/* Shape of the hook's tensor for a batch of B sequences of T positions. */
model_shape model_hook_shape(const model_config *cfg, model_hook h, size_t B, size_t T);
/* True when the hook's position axis is axis 1 ([B,T,...]); false for the attention
 * score/pattern hooks whose query axis is axis 2 ([B,H,Tq,Tk]). */
bool model_hook_position_major(model_hook_kind k);

/* ------------------------------------------------------------------------------------------ */
/* Backend interface                                                                           */

/* A buffer on the backend's device: opaque, defined by each backend. Elements are 4 bytes
 * (float32 or int32); offsets and counts below are in elements. */
typedef struct model_buf model_buf;

/* A position inside a device buffer. */
typedef struct model_ref {
    model_buf *buf;
    size_t off; /* elements */
} model_ref;

/* Row-major strided-batched sgemm: for i < batch,
 * C_i = alpha * op(A_i) op(B_i) + beta * C_i, op(A) [m,k], op(B) [k,n], C [m,n],
 * X_i = X + i * stride_x. lda/ldb/ldc are row strides of the stored (untransposed) matrices. */
typedef struct model_gemm {
    bool trans_a, trans_b;
    size_t m, n, k;
    float alpha, beta;
    model_ref a;
    size_t lda, stride_a;
    model_ref b;
    size_t ldb, stride_b;
    model_ref c;
    size_t ldc, stride_c;
    size_t batch;
} model_gemm;

/* Rows of attention scores or patterns for one sequence: for h < n_heads and query position
 * q in [q_begin, q_end), the row starting at base + h * head_stride + q * ld has n_keys
 * entries (key positions 0..n_keys-1). */
typedef struct model_attn_rows {
    size_t n_heads;
    size_t head_stride;
    size_t q_begin, q_end;
    size_t ld;
    size_t n_keys;
} model_attn_rows;

/* Causal attention of a packed batch of sequences without their scores or patterns in memory,
 * for the optional op attn_fused: all of a request's rows in one operation. Sequence s is entry
 * s of the int32 table seqs [n_seqs, MODEL_ATTN_SEQ_FIELDS], {q_row, kv_row, q_begin, q_end}:
 * its queries are the positions q in [q_begin, q_end), query q in row q_row + (q - q_begin) of q
 * (and of z), and its key / value j < q_end in row kv_row + j of k (and of v). For every
 * sequence, head h < n_heads and query q:
 *   z[q, h, :] = sum over keys j <= q of pattern[h, q, j] * v[j, h, :],
 * where pattern[h, q, :] is what the unfused composition gives: scores s_j = (q[q, h, :] .
 * k[j, h, :]) / attn_scale for j <= q, -inf for the rest of a row of n_keys keys (TL's mask),
 * then softmax with NaN -> 0 (a row without a finite score gives z = 0; a NaN score gives a NaN
 * row, as softmax does). Rows are position-major with heads side by side, as hook_q/k/v/z are:
 * row i of q starts at q.off + i * q_ld (of z at z.off + i * z_ld), row j of k at k.off + j *
 * kv_ld (of v at v.off + j * kv_ld); head h occupies columns [h * d_head, (h+1) * d_head). Keys
 * j >= q_end are never read. n_keys (>= every q_end) is the width of the score rows of the
 * unfused composition (the sequences' T) and changes nothing mathematically; it is there so
 * that an implementation by that composition can reproduce the unfused forward bit for bit.
 * Every entry must lie within the first q_rows rows of q and z and kv_rows rows of k and v, with
 * q_begin <= q_end <= n_keys (ranges the op checks against the buffers); an entry outside them
 * is skipped and reported as copy_rows reports one. z must not overlap q, k or v, nor two
 * sequences' z rows each other. */
typedef struct model_attn {
    size_t n_heads, d_head;
    size_t n_keys;
    model_ref q;
    size_t q_ld;
    model_ref k, v;
    size_t kv_ld;
    model_ref z;
    size_t z_ld;
    float attn_scale;
    model_ref seqs; /* int32 [n_seqs, MODEL_ATTN_SEQ_FIELDS] */
    size_t n_seqs;
    size_t q_rows, kv_rows;
} model_attn;
#define MODEL_ATTN_SEQ_FIELDS 4

/* A metric: one value read from a row of V logits (interp's metrics are these). */
typedef enum model_metric_kind {
    MODEL_METRIC_LOGIT,      /* x[token] */
    MODEL_METRIC_LOGIT_DIFF, /* (double)x[token] - (double)x[token2] */
    MODEL_METRIC_LOGPROB,    /* log_softmax(x)[token] */
    MODEL_METRIC_MASS,       /* the softmax probability of the tokens of a mask, summed */
} model_metric_kind;

/* A metric's parameters: MODEL_METRIC_FIELDS int32 values in this order, which are also the
 * rows of row_metrics' spec table. */
typedef struct model_metric {
    int32_t kind;   /* model_metric_kind */
    int32_t token;  /* LOGIT, LOGIT_DIFF, LOGPROB */
    int32_t token2; /* LOGIT_DIFF */
    int32_t mask;   /* MASS: the row of the masks (row_metrics, model_cache_metrics) */
} model_metric;
#define MODEL_METRIC_FIELDS 4

/* The value of metric m on logits x [V]; mask [V] (nonzero: the token counts towards MASS) is
 * read for MASS only. With mx the largest x[v] (a double from -inf, in increasing v, by
 * x[v] > mx) and z the double sum of exp((double)x[v] - mx) in increasing v, LOGPROB is
 * (double)x[token] - mx - log(z) and MASS the same sum over the mask's tokens, divided by z.
 * These are the operations every backend's row_metrics makes. NaN for a kind or a token
 * outside range (callers check them first: interp_metric_eval, model_cache_metrics). */
double model_metric_eval(const model_metric *m, const float *x, const uint8_t *mask, size_t V);

/* A captured launch sequence of a backend (graph_end), replayed by graph_launch. Opaque. */
typedef struct model_graph model_graph;

typedef struct model_backend model_backend;

/* The operations the forward pass needs. Every op may be asynchronous with respect to the
 * host except download, which returns when the data has arrived. Ops return 0 or a negative
 * COMMON_ERR_* code with a message. No host pointer to device memory ever crosses this
 * interface; host memory appears only in upload/download. */
struct model_backend {
    const char *name; /* "cpu", "cuda:0", ... */
    void *impl;       /* the backend's own state */
    void (*destroy)(model_backend *be);
    /* n elements of 4 bytes, uninitialised. */
    int (*alloc)(model_backend *be, size_t n, model_buf **out, char *err);
    void (*free)(model_backend *be, model_buf *buf);
    /* Bytes currently allocated, and the peak since the last reset_peak. */
    void (*mem_stats)(const model_backend *be, size_t *in_use, size_t *peak);
    void (*reset_peak)(model_backend *be);
    int (*upload)(model_backend *be, model_ref dst, const void *host, size_t n, char *err);
    int (*download)(model_backend *be, void *host, model_ref src, size_t n, char *err);
    /* dst[r * dst_ld + c] = src[r * src_ld + c] for r < rows, c < cols (no overlap);
     * src_ld 0 broadcasts one row. */
    int (*copy2d)(model_backend *be, model_ref dst, size_t dst_ld, model_ref src, size_t src_ld,
                  size_t rows, size_t cols, char *err);
    /* Many row blocks copied in one operation (a packed batch's per-row copies in one launch,
     * not one per row): for each entry e < n of the int32 table [n, MODEL_COPY_ROWS_FIELDS],
     * {dst_row, src_row, rows}, dst[dst.off + (dst_row + i) * dst_ld + c] = src[src.off +
     * (src_row + i) * src_ld + c] for i < rows, c < cols. Entries must lie within the first
     * dst_rows rows of dst and src_rows rows of src, ranges checked against the buffers as
     * copy2d's are; an entry outside them is not copied and is reported as gather_rows reports
     * an index outside its table: INVALID at once by the CPU backend (whose table is host
     * memory), by the next download or sync by a device's. No destination may overlap another
     * entry's or the source. */
    int (*copy_rows)(model_backend *be, model_ref dst, size_t dst_ld, size_t dst_rows,
                     model_ref src, size_t src_ld, size_t src_rows, model_ref table, size_t n,
                     size_t cols, char *err);
    /* dst[i] = value for i < n. */
    int (*fill)(model_backend *be, model_ref dst, size_t n, float value, char *err);
    int (*gemm)(model_backend *be, const model_gemm *g, char *err);
    /* dst[i] = a[i] + b[i] (dst may alias a or b). */
    int (*add)(model_backend *be, model_ref dst, model_ref a, model_ref b, size_t n, char *err);
    /* TL LayerNorm(Pre) on x [rows, d]: centre, scale[r] = sqrt(mean(xc^2) + eps),
     * norm = xc / scale. */
    int (*layer_norm)(model_backend *be, model_ref x, model_ref norm, model_ref scale, size_t rows,
                      size_t d, float eps, char *err);
    /* y[r, c] = x[r, c] * w[c] + b[c] (dst may alias x). */
    int (*affine)(model_backend *be, model_ref y, model_ref x, model_ref w, model_ref b,
                  size_t rows, size_t d, char *err);
    /* dst[i, :] = table[idx[i], :] for i < n; idx is an int32 buffer; rows of width d. */
    int (*gather_rows)(model_backend *be, model_ref dst, model_ref table, model_ref idx, size_t n,
                       size_t d, char *err);
    /* In place on the rows: s = s / attn_scale for key <= q, -inf for key > q. */
    int (*attn_mask)(model_backend *be, model_ref scores, const model_attn_rows *rows,
                     float attn_scale, char *err);
    /* pattern row = softmax(scores row) with NaN -> 0 (same geometry; may alias). */
    int (*softmax)(model_backend *be, model_ref pattern, model_ref scores,
                   const model_attn_rows *rows, char *err);
    /* dst[i] = gelu_new(src[i]) (tanh form; may alias). */
    int (*gelu_new)(model_backend *be, model_ref dst, model_ref src, size_t n, char *err);
    /* Waits until all queued work is done. */
    int (*sync)(model_backend *be, char *err);
    /* Column sums of chosen rows, accumulated in double, so that statistics over many games
     * reduce where the activations are and only the sums come back: for g < n_groups and
     * c < cols, acc[g * acc_ld + c] += x[r * x_ld + c] for every r < rows, in increasing r,
     * whose int32 mask[r] has bit g set. Each addition is one double addition of a float32
     * value, in the order a host loop over the rows makes them, so the sums equal that loop's
     * bit for bit on every backend. acc holds doubles, two elements each: acc.off must be even
     * and acc_ld counts doubles ([n_groups, acc_ld] doubles from acc.off); x is float32
     * [rows, x_ld]; n_groups <= 31. INVALID for a range outside a buffer or an odd acc.off. */
    int (*sum_rows)(model_backend *be, model_ref acc, size_t acc_ld, model_ref x, size_t x_ld,
                    model_ref mask, size_t rows, size_t cols, size_t n_groups, char *err);
    /* TL's apply_ln_to_stack with a cached scale, in place on x, float32 [rows, d]: for each
     * row r, mu = (float)(s / d) where s is the double sum of the row's d values in increasing
     * order, then x[r, c] = (x[r, c] - mu) / scale[r % period] in float32. scale is float32
     * [period]: with x a stack [n, period, d] of residual rows, each position's own scale.
     * The CPU backend makes exactly these operations in this order (interp's apply_ln_to_stack
     * does too), so its results equal interp's bit for bit; the CUDA backend adds the row in
     * another order (a float32 result within an ulp of mu / scale of the CPU's). INVALID for a
     * range outside a buffer, or period 0 with rows > 0. */
    int (*centre_scale)(model_backend *be, model_ref x, model_ref scale, size_t rows, size_t d,
                        size_t period, char *err);
    /* Legal-move statistics of one game's logits, accumulated where the logits are, so that
     * statistics over many games bring no logits to the host (interp_legal_stats_add's loop on
     * the device). x is float32 [n_comp, T, V] (component c's logits at position t start at
     * x.off + (c * T + t) * V), legal int32 [T, V] (nonzero: token v is legal after t). At
     * every position t < T with at least one legal and one illegal token, for every c, in
     * increasing v: mn = x < mn ? x : mn over legal tokens from +inf and mx = x > mx ? x : mx
     * over illegal ones from -inf (float32; a NaN is skipped), s_l and s_i the double sums of
     * legal and illegal logits; then, with n_l legal tokens, the statistics (MODEL_LEGAL_N_STATS,
     * as doubles, in this order) are mn, mx, s_l / n_l, s_i / (V - n_l), mn - (double)mx and
     * s_l / n_l - s_i / (V - n_l), and cell k = c * acc_T + t adds them: count[k] += 1, and for
     * each statistic j with value v, sum[j][k] += v, f = (float)v, min[j][k] = f < min ? f :
     * min, max[j][k] = f > max ? f : max. Positions without both kinds of token add nothing.
     * Every backend makes exactly these operations, each cell's in game order, so the
     * accumulators equal that host loop's bit for bit for the same logits. acc holds, for
     * cells = n_comp * acc_T (MODEL_LEGAL_ACC_LEN(cells) elements from an even acc.off): count
     * [cells] doubles, sum [MODEL_LEGAL_N_STATS, cells] doubles, then min and max
     * [MODEL_LEGAL_N_STATS, cells] float32 each (offsets MODEL_LEGAL_ACC_*); a fresh one holds 0
     * in count and sum and +inf / -inf in min / max (three fills: 0, INFINITY, -INFINITY). The
     * caller keeps acc, x and legal; the op writes only acc. INVALID for T > acc_T, an odd
     * acc.off or a range outside a buffer. */
    int (*legal_stats)(model_backend *be, model_ref acc, size_t acc_T, model_ref x, model_ref legal,
                       size_t n_comp, size_t T, size_t V, char *err);

    /* Metrics of rows of logits where the logits are, so that a patched run sends one value to
     * the host instead of its V logits: for r < rows, out[r] = model_metric_eval(spec row r,
     * the V floats from x.off + r * x_ld, mask row spec[r].mask, V). spec is int32 [rows,
     * MODEL_METRIC_FIELDS] (model_metric's fields); masks holds n_masks rows of V bytes, packed
     * from masks.off (ceil(n_masks * V / 4) elements; any ref when n_masks is 0); out is doubles
     * [rows] from an even out.off. A spec with a kind, token or mask row out of range gives NaN.
     * The CPU backend calls model_metric_eval; the CUDA backend makes the same operations with
     * the device's exp and log (each within an ulp of the host's), so its values agree to double
     * rounding. INVALID for an odd out.off or a range outside a buffer. */
    int (*row_metrics)(model_backend *be, model_ref out, model_ref x, size_t x_ld, model_ref spec,
                       model_ref masks, size_t n_masks, size_t rows, size_t V, char *err);

    /* Optional operations: NULL where a backend does not have them (the CPU backend has none),
     * and every caller has a path without them. */

    /* Fused causal attention (model_attn above): z from q, k, v in one operation, with no
     * [H, T, T] tensor in memory. The forward uses it for a layer only when no hook of that
     * layer's scores or pattern is cached or patched; the unfused composition (gemm, attn_mask,
     * softmax, gemm) stays the reference it must agree with (float32: relative 1e-5). INVALID
     * for a range outside a buffer. */
    int (*attn_fused)(model_backend *be, const model_attn *a, char *err);

    /* Capture and replay of a launch sequence (CUDA graphs), for work that repeats with the
     * same operations on the same buffers, where launching costs more than computing.
     * graph_begin starts recording: the operations queued until graph_end are recorded, not
     * run, and must be device work only (copy2d, copy_rows, fill, gemm, add, layer_norm, affine,
     * gather_rows, attn_mask, softmax, gelu_new, sum_rows, centre_scale, legal_stats,
     * row_metrics, attn_fused; an upload, download, sync, alloc or free while recording fails, and
     * so fails graph_end). graph_end stops recording and sets *out (caller owns; graph_destroy) to
     * the sequence; after a failure while recording it returns that failure, sets nothing and
     * leaves the backend ready for ordinary work. graph_launch queues the whole sequence once, as
     * if its operations were queued again with the arguments they were recorded with: the same
     * buffers and offsets, whatever those buffers hold now. Buffers a graph uses must outlive it.
     * graph_destroy accepts NULL. */
    int (*graph_begin)(model_backend *be, char *err);
    int (*graph_end)(model_backend *be, model_graph **out, char *err);
    int (*graph_launch)(model_backend *be, model_graph *g, char *err);
    void (*graph_destroy)(model_backend *be, model_graph *g);
};

/* The int32 fields of an entry of copy_rows' table: dst_row, src_row, rows. */
#define MODEL_COPY_ROWS_FIELDS 3

/* Largest n_groups of sum_rows (the bits of a non-negative int32). */
#define MODEL_SUM_ROWS_MAX_GROUPS 31

/* The accumulators of legal_stats over `cells` cells, in 4-byte elements from acc.off: count
 * (doubles), sum (MODEL_LEGAL_N_STATS rows of doubles), min, max (MODEL_LEGAL_N_STATS rows of
 * float32 each). The statistics are interp's INTERP_LEGAL_*, in that order. */
#define MODEL_LEGAL_N_STATS 6
#define MODEL_LEGAL_ACC_COUNT(cells) ((size_t)0)
#define MODEL_LEGAL_ACC_SUM(cells) (2 * (size_t)(cells))
#define MODEL_LEGAL_ACC_MIN(cells) ((2 + 2 * MODEL_LEGAL_N_STATS) * (size_t)(cells))
#define MODEL_LEGAL_ACC_MAX(cells) ((2 + 3 * MODEL_LEGAL_N_STATS) * (size_t)(cells))
#define MODEL_LEGAL_ACC_LEN(cells) ((2 + 4 * MODEL_LEGAL_N_STATS) * (size_t)(cells))

/* The CPU backend: OpenBLAS sgemm and vectorised loops on n_threads threads (n_threads <= 0
 * means all online CPUs). A backend serves one thread at a time. OpenBLAS' thread count is
 * process-wide; the last backend created sets it. */
int model_backend_cpu_new(model_backend **out, int n_threads, char *err);

/* Calls be->destroy; accepts NULL and NULL *be. */
void model_backend_destroy(model_backend **be);

/* What a counting backend saw pass (model_backend_count_new). */
typedef struct model_backend_counts {
    uint64_t device_ops; /* operations queued on the device: uploads, copies, fills, products,
                          * the element-wise, reduction and attention ops (a GPU's launches) */
    uint64_t host_waits; /* downloads and syncs: the host waits for the device */
    uint64_t downloaded; /* 4-byte elements the downloads brought to the host */
} model_backend_counts;

/* A backend over inner that passes every operation to it unchanged and counts it into *counts,
 * for benchmarks and tests that ask how many launches or waits some work takes (bench_gpu sets
 * them against the launch cost it measures). inner and counts are borrowed and must outlive
 * it; destroying it leaves inner alone. Graph operations are not offered (NULL), nor attn_fused
 * where inner has none. */
int model_backend_count_new(model_backend **out, model_backend *inner, model_backend_counts *counts,
                            char *err);

/* ------------------------------------------------------------------------------------------ */
/* Collectives: operations over the buffers of several backends (ranks) at once                */

/* A fixed group of n_ranks backends (rank r is bes[r] of its constructor) that copy and sum
 * buffers between them: a worker with several devices broadcasts the weights and reduces the
 * partial statistics of a split task with it. Every operation takes one buffer per rank,
 * bufs[r] on rank r's backend, and is called by one thread for all ranks together (that is
 * what NCCL's grouped calls need). Operations are queued on the ranks' backends in their
 * order like any backend operation: a later download on a rank sees the result. The backends
 * are borrowed and must outlive the collective. Errors name the collective and the rank. */
typedef struct model_collective model_collective;
struct model_collective {
    const char *name; /* "host", "nccl" */
    size_t n_ranks;
    void *impl;
    void (*destroy)(model_collective *c);
    /* bufs[r] = bufs[root] (n elements of 4 bytes) for every rank r != root. */
    int (*broadcast)(model_collective *c, const model_ref *bufs, size_t n, size_t root, char *err);
    /* bufs[root] = the sum over every rank r of bufs[r], n doubles (2 n elements from an even
     * offset, as sum_rows' accumulators); the other ranks' buffers are left unspecified. The
     * order of the additions is the implementation's: the result is the one-rank sum to double
     * rounding (a relative 1e-15 per addition), not bit for bit. */
    int (*reduce_sum_f64)(model_collective *c, const model_ref *bufs, size_t n, size_t root,
                          char *err);
};

/* The collective of any backends through host memory: a broadcast downloads root's buffer once
 * and uploads it to each other rank; a reduction downloads every rank's doubles and adds them
 * in rank order (rank 0 first) on the host, then uploads the sum to root. It serves the CPU
 * backend, tests, and GPU builds without NCCL. n 0 is INVALID; bes [n] borrowed. */
int model_collective_host_new(model_collective **out, model_backend *const *bes, size_t n,
                              char *err);
/* Calls c->destroy; accepts NULL and NULL *c. */
void model_collective_destroy(model_collective **c);

/* ------------------------------------------------------------------------------------------ */
/* Caches: the outputs of a run, in device buffers                                             */

typedef struct model_cache model_cache;

/* An empty cache for B sequences of T positions on the session's backend (to be filled with
 * model_cache_put, e.g. a residual stream to start from). A cache refers to its session's model
 * and backend and must not outlive them. */
typedef struct model_session model_session;
int model_cache_new(model_cache **out, model_session *s, size_t B, size_t T, char *err);
/* Frees the device buffers; accepts NULL and NULL *c. */
void model_cache_destroy(model_cache **c);
size_t model_cache_batch(const model_cache *c);
size_t model_cache_positions(const model_cache *c);
bool model_cache_has(const model_cache *c, model_hook h);
/* Shape of a held hook ([B,...]); false when not held. */
bool model_cache_shape(const model_cache *c, model_hook h, model_shape *shape);
/* Downloads a whole held hook into dst (cap floats). */
int model_cache_download(const model_cache *c, model_hook h, float *dst, size_t cap, char *err);
/* Downloads batch row `row` of a held hook (its shape without the batch axis). */
int model_cache_download_row(const model_cache *c, model_hook h, size_t row, float *dst, size_t cap,
                             char *err);
/* Downloads position pos of every batch row of a held hook of shape [B, T, W] (resid_*, the
 * logits, ...) into dst [B, W] (cap floats) with one device gather and one transfer, so that a
 * caller reading one position of many rows (a patch task's base runs read the last position's
 * logits) waits for the device once, not once per row. INVALID for another shape or pos >= T. */
int model_cache_download_position(const model_cache *c, model_hook h, size_t pos, float *dst,
                                  size_t cap, char *err);
/* Metric values of position pos of every batch row of a held hook of shape [B, T, V] (the
 * logits), computed on the device: out[r] = specs[r] (model_metric_eval) on row r's V values at
 * pos, for r < B. The spec table goes up, the op runs and B doubles come back: the caller waits
 * once and the logits stay on the device. masks: n_masks packed rows of V bytes on the cache's
 * backend (model_metric_masks_upload), or NULL with n_masks 0. NOT_FOUND when c does not hold
 * h; INVALID for another shape, pos >= T, or a spec whose kind, token or mask row is out of
 * range. */
int model_cache_metrics(const model_cache *c, model_hook h, size_t pos, const model_metric *specs,
                        model_buf *masks, size_t n_masks, double *out, char *err);
/* A new buffer of `be` holding n_masks rows of V bytes (masks [n_masks, V], nonzero: the token
 * counts towards a MASS metric) for model_cache_metrics; the caller frees it with be->free.
 * INVALID for n_masks or V 0. */
int model_metric_masks_upload(model_backend *be, const uint8_t *masks, size_t n_masks, size_t V,
                              model_buf **out, char *err);
/* The device tensor of a held hook (full shape [B, ...], row-major), for analyses that run
 * backend operations on it; buf is NULL when the cache does not hold the hook. Owned by c. */
model_ref model_cache_ref(const model_cache *c, model_hook h);
/* Uploads host data [B, ...] (the hook's full shape) into the cache, replacing any value. */
int model_cache_put(model_cache *c, model_hook h, const float *src, size_t n, char *err);
/* Bytes of device memory the cache holds. */
size_t model_cache_bytes(const model_cache *c);

/* ------------------------------------------------------------------------------------------ */
/* Sessions and runs                                                                           */

/* Uploads m's processed parameters to `be` in the layouts the forward pass uses. m and be are
 * borrowed and must outlive the session. A session runs one request at a time: it keeps the
 * workspace of its runs for the next one. */
int model_session_new(model_session **out, const model *m, model_backend *be, char *err);
void model_session_destroy(model_session **s);
/* Sessions of m on n backends, out[r] on bes[r]: the processed weights are uploaded from the
 * host once, to bes[0], and copied from there to the other ranks with c->broadcast (c NULL:
 * uploaded to each rank from the host copy, which is read from disk only once either way).
 * c, when given, must be a collective over exactly bes. Each out[r] is an ordinary session
 * (model_session_destroy); on an error none is set. */
int model_session_new_group(model_session **out, const model *m, model_backend *const *bes,
                            size_t n, model_collective *c, char *err);
/* Frees the workspace the session keeps between runs (it is reallocated when needed). */
void model_session_release_workspace(model_session *s);
const model *model_session_model(const model_session *s);
model_backend *model_session_backend(const model_session *s);
/* The session's device copy of a processed parameter, by model_param's name, for analyses that
 * run backend operations with the weights: laid out exactly as model_param's host copy (e.g.
 * "blocks.3.attn.W_O" [H,Dh,D], "unembed.W_U" [D,V]). buf is NULL for a name the session does
 * not hold in that layout: W_Q, W_K and W_V (laid out [D, H*Dh] for the forward), LN weights
 * of a model with fold_ln, unknown names and layers. Owned by s. */
model_ref model_session_param(const model_session *s, const char *name);

/* "All rows / positions / heads / keys" in a replacement. */
#define MODEL_ALL (-1)

/* Replace the activation at `hook` (after it is computed, before anything reads it) with the
 * value of the same hook held by `src` at batch row src_row (MODEL_ALL: the same row as the
 * destination), restricted to batch row `row`, position `pos` (the query position for
 * scores/pattern) and head `head` (for [.,T,H,.] and [B,H,T,T] hooks; must be MODEL_ALL for
 * hooks without a head axis), and for the [B,H,T,T] hooks (attn_scores, pattern) to key
 * position `key_pos` inside each replaced query row (MODEL_ALL: the whole row; must be
 * MODEL_ALL for every other hook). With hook pattern, pos d, head h and key_pos s a patch
 * replaces the single element pattern[row, h, d, s] (TL's
 * get_act_patch_attn_head_pattern_dest_src_pos). hook_scale hooks cannot be replaced
 * (UNSUPPORTED). Set every field: an initialiser that omits key_pos means key 0, not the whole
 * row. */
typedef struct model_patch {
    model_hook hook;
    int row;
    int pos;
    int head;
    const model_cache *src;
    int src_row;
    int key_pos; /* MODEL_ALL or a key (source) position; attn_scores / pattern only */
} model_patch;

/* A run, described by data.
 *
 * tokens [B,T] host int32, right-padded. lengths [B] (NULL: all T): positions >= lengths[r] are
 * not computed and read as 0 in the outputs (right padding cannot change earlier positions).
 *
 * Layers [start_layer, stop_layer) run; stop_layer == n_layers also runs ln_final and the
 * unembed. With start_layer > 0 the residual entering start_layer is read from `base`
 * (blocks.{start}.hook_resid_pre, else blocks.{start-1}.hook_resid_post).
 *
 * Incremental mode (start_pos != NULL): row r computes only positions start_pos[r]..T-1 in
 * layers start_layer.. ; keys and values of positions < start_pos[r] come from base's hook_k /
 * hook_v of each layer run, and the residual entering start_layer from base as above, all at
 * base row base_rows[r] (NULL: row r). The computed positions of all rows are packed into one
 * matrix, so every linear layer is one GEMM. Causality makes the result exact.
 *
 * Outputs: every hook in `hooks` plus logits when want_logits (needs stop_layer == n_layers),
 * each with its full TL shape. Values this run does not compute (layers before start_layer,
 * positions before start_pos[r]) are copied from base, which must then hold that hook. */
typedef struct model_request {
    const int32_t *tokens; /* [B,T] */
    size_t B, T;
    const size_t *lengths; /* [B] or NULL */
    const model_hook *hooks;
    size_t n_hooks;
    bool want_logits;
    const model_patch *patches;
    size_t n_patches;
    int start_layer;
    int stop_layer;
    const model_cache *base;
    const size_t *base_rows; /* [B] or NULL */
    const size_t *start_pos; /* [B] or NULL */
} model_request;

/* Sets a full run of the session's model: no hooks, logits wanted, all layers. */
void model_request_init(model_request *r, const model_session *s, const int32_t *tokens, size_t B,
                        size_t T);
/* Runs the request; on success *out is a new cache (caller destroys) holding the requested
 * hooks and logits. Invalid requests (token out of vocabulary, T > n_ctx, layers out of range,
 * a patch outside the computed positions, a base lacking what it must supply, shape
 * mismatches) fail before any work with a message naming the problem. */
int model_run(model_session *s, const model_request *req, model_cache **out, char *err);

#endif
