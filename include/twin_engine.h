/*
 * twin_engine.h — C API of twin-engine, a scoring engine for the TWIN / TWIN-V2 CTR models.
 *
 * Link against the shared library built by `cargo build --release` (libtwin_engine.so on
 * Linux, libtwin_engine.dylib on macOS):
 *
 *     cc -I include my_service.c -L target/release -ltwin_engine -Wl,-rpath,target/release
 *
 * Model
 *   An engine loads one model file (written by `twin train` / Model::save), builds its tables
 *   on a backend (CPU, CUDA, wgpu) and scores requests: one user's behaviour sequences and B
 *   candidate items in, B click-through rates in (0, 1) out. `twin_engine_swap` replaces the
 *   model atomically while requests keep being served.
 *
 * Errors
 *   Every fallible function returns an int32_t status: TWIN_OK (0) or one of the TWIN_ERR_*
 *   codes below. It also records a message on the calling thread that names the offending
 *   field and value (e.g. "candidates[1] = 200 is out of range (vocabulary size 200)");
 *   read it with twin_last_error() / twin_last_error_code(). Every twin_* call except those two
 *   and twin_version_string() overwrites it; a successful call clears it.
 *   No panic or exception ever crosses this boundary: an internal bug is reported as
 *   TWIN_ERR_PANIC and the handle stays usable.
 *
 * Threads
 *   A twin_engine* may be shared by any number of threads: twin_engine_score, _swap,
 *   _model_version and _n_items may run concurrently on one handle (with batching on,
 *   concurrent requests are gathered into one backend call). twin_engine_close must not
 *   overlap any other call on the same handle, and the handle must not be used after it.
 *
 * Memory
 *   The library never keeps the caller's pointers beyond a call and never frees them. Arrays
 *   must be naturally aligned for their element type; a NULL array is accepted only with
 *   length 0 (it is then empty). Strings are NUL-terminated UTF-8.
 */
#ifndef TWIN_ENGINE_H
#define TWIN_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes ---------------------------------------------------------------------- */

typedef enum twin_status {
    TWIN_OK = 0,
    /* A required pointer argument was NULL (or an array was NULL with a non-zero length). */
    TWIN_ERR_NULL_ARG = 1,
    /* Bad request or option: an item id outside the catalogue, a NaN/infinite play time or
     * completion, a cluster size of 0, no candidates, an unknown enum value in the options,
     * a path that is not UTF-8, a misaligned array, a swap to a model with another catalogue. */
    TWIN_ERR_INVALID_INPUT = 2,
    /* A length over the engine's limits (max_candidates, max_seq_len). */
    TWIN_ERR_TOO_LARGE = 3,
    /* The model file could not be read (missing, permissions, ...). */
    TWIN_ERR_IO = 4,
    /* The file is not a valid model: bad magic, truncated, checksum mismatch, bad content. */
    TWIN_ERR_CORRUPT_FILE = 5,
    /* The backend failed while running (GPU driver, runtime or shader compiler error). */
    TWIN_ERR_BACKEND = 6,
    /* The request queue is full (batching on); retry later or raise queue_capacity. */
    TWIN_ERR_OVERLOADED = 7,
    /* out_len is smaller than the request's candidate count; nothing was written. */
    TWIN_ERR_BUFFER_TOO_SMALL = 8,
    /* An internal bug (a caught Rust panic); please report the message. */
    TWIN_ERR_PANIC = 9,
    /* The model file was written by a newer format version than this library reads. */
    TWIN_ERR_UNSUPPORTED_VERSION = 10,
    /* The requested backend cannot run here (not compiled in, no driver, no adapter). */
    TWIN_ERR_BACKEND_UNAVAILABLE = 11,
    /* An error this version of the C API does not classify more precisely. */
    TWIN_ERR_INTERNAL = 12
} twin_status;

/* ---- options --------------------------------------------------------------------------- */

/* Where the engine runs. AUTO tries CUDA, then a hardware wgpu adapter, then the CPU. */
typedef enum twin_backend {
    TWIN_BACKEND_AUTO = 0,
    TWIN_BACKEND_CPU = 1,
    TWIN_BACKEND_CUDA = 2,
    TWIN_BACKEND_WGPU = 3
} twin_backend;

/* The variant the model was trained as; it decides which sequence modules run. */
typedef enum twin_variant {
    /* GSU + ESU over the user's clusters (long_seq holds clusters, `size` = members). */
    TWIN_VARIANT_TWIN_V2 = 0,
    /* GSU + ESU over the raw lifelong sequence. */
    TWIN_VARIANT_TWIN = 1,
    /* GSU by item-embedding inner product (SIM soft search), then the same ESU. */
    TWIN_VARIANT_SIM_SOFT = 2,
    /* Short-term attention over the most recent behaviours only (long_seq ignored). */
    TWIN_VARIANT_DIN_SHORT = 3,
    /* No sequence modules: context and candidate features only. */
    TWIN_VARIANT_NO_SEQ = 4
} twin_variant;

/* Storage of the backend's projection tables. */
typedef enum twin_dtype {
    TWIN_DTYPE_F32 = 0,
    TWIN_DTYPE_F16 = 1
} twin_dtype;

/* Engine settings. Start from twin_engine_options_default() and change what you need.
 * The enum fields hold twin_backend / twin_variant / twin_dtype values (fixed 32-bit width
 * for a stable layout); a value outside the enum is refused with TWIN_ERR_INVALID_INPUT.
 * A size field set to 0 takes the library default. struct_size lets a later library that adds
 * fields tell an older caller's struct apart; a struct_size this library does not know is
 * refused with TWIN_ERR_INVALID_INPUT. */
typedef struct twin_engine_options {
    uint32_t struct_size;          /* sizeof(twin_engine_options); set by twin_engine_options_default */
    int32_t backend;               /* twin_backend; default TWIN_BACKEND_AUTO */
    int32_t variant;               /* twin_variant; default TWIN_VARIANT_TWIN */
    int32_t dtype;                 /* twin_dtype; default TWIN_DTYPE_F32 */
    int32_t batching;              /* non-zero: gather concurrent requests; default 1 */
    uint64_t max_wait_us;          /* how long a batch's first request waits; default 500 (0: none) */
    uint64_t queue_capacity;       /* requests waiting at most, else OVERLOADED; default 4096 */
    uint64_t max_batch_requests;   /* most requests per backend call; default 64 */
    uint64_t max_batch_candidates; /* most candidates per backend call; default 16384 */
    uint64_t max_candidates;       /* most candidates per request; default 4096 */
    uint64_t max_seq_len;          /* most behaviours per sequence; default 100000, at most 2^20 */
} twin_engine_options;

/* ---- requests -------------------------------------------------------------------------- */

/* One behaviour of the user's history or, for TWIN-V2, one cluster as a virtual item. */
typedef struct twin_behaviour {
    uint32_t item;       /* item id, 0 <= item < twin_engine_n_items() */
    int64_t timestamp;   /* seconds since the epoch (a cluster: its newest member's) */
    float play_time;     /* seconds watched (a cluster: the mean); finite */
    float completion;    /* completion ratio in [0, 1] (a cluster: the mean); finite */
    uint32_t size;       /* cluster size, >= 1; 1 for a raw behaviour */
} twin_behaviour;

/* One user x n_candidates candidates. Sequences are oldest first. */
typedef struct twin_request {
    int64_t request_time;            /* seconds since the epoch */
    const twin_behaviour* long_seq;  /* the GSU's input: raw lifelong sequence or clusters */
    size_t long_len;
    const twin_behaviour* short_seq; /* recent raw behaviours; the model uses the last short_len */
    size_t short_len;
    const uint32_t* candidates;      /* item ids to score, at least one */
    size_t n_candidates;
} twin_request;

/* ---- functions ------------------------------------------------------------------------- */

/* The opaque engine handle. */
typedef struct twin_engine twin_engine;

/* The library version, e.g. "0.1.0". Static storage: never free it. */
const char* twin_version_string(void);

/* Fills *out with the defaults. Returns TWIN_ERR_NULL_ARG when out is NULL. */
int32_t twin_engine_options_default(twin_engine_options* out);

/* Loads the model file at model_path onto the backend opts names (opts NULL: defaults) and
 * builds its tables. On success *out is the new handle (free it with twin_engine_close);
 * on failure *out is set to NULL.
 * Errors: NULL_ARG, INVALID_INPUT (options, non-UTF-8 path), TOO_LARGE (options), IO,
 * CORRUPT_FILE, UNSUPPORTED_VERSION, BACKEND_UNAVAILABLE, BACKEND. The message names the path. */
int32_t twin_engine_open(const char* model_path, const twin_engine_options* opts, twin_engine** out);

/* Frees the handle: stops its batching thread and drops the model. NULL is a no-op. */
void twin_engine_close(twin_engine* engine);

/* Scores one request: writes req->n_candidates CTRs, in candidate order, to out_ctr (which
 * holds out_len floats) and the version of the model that scored them to *out_model_version
 * (which may be NULL). On failure nothing is written to out_ctr.
 * Errors: NULL_ARG, BUFFER_TOO_SMALL (out_len < n_candidates), INVALID_INPUT (unknown item
 * id, NaN, size 0, no candidates, misaligned array), TOO_LARGE, OVERLOADED, BACKEND. */
int32_t twin_engine_score(const twin_engine* engine, const twin_request* req, float* out_ctr, size_t out_len,
                          uint64_t* out_model_version);

/* Loads model_path as the next model version and switches to it atomically; requests in
 * flight finish on the version they started with. On success *out_version (may be NULL) is
 * the new version number. On failure the current model keeps serving, unchanged.
 * The new model must have the same catalogue size (else INVALID_INPUT).
 * Errors: as twin_engine_open. */
int32_t twin_engine_swap(const twin_engine* engine, const char* model_path, uint64_t* out_version);

/* The version of the model serving new requests: 1 after open, larger after each successful
 * swap (increasing, not necessarily consecutive). 0 when engine is NULL. */
uint64_t twin_engine_model_version(const twin_engine* engine);

/* The serving model's catalogue size: valid item ids are 0 .. n_items - 1. 0 when engine is NULL. */
uint64_t twin_engine_n_items(const twin_engine* engine);

/* The status of the last twin_* call on this thread (TWIN_OK after a success). */
int32_t twin_last_error_code(void);

/* Copies the last call's error message on this thread (empty after a success) into buf,
 * truncated to len - 1 bytes (never mid UTF-8 character) and NUL-terminated; nothing is
 * written when buf is NULL or len is 0. Returns the message's full length in bytes, without
 * the NUL, like snprintf: the whole message fit when the result is < len. */
size_t twin_last_error(char* buf, size_t len);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TWIN_ENGINE_H */
