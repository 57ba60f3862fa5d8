/*
 * score.c — embedding twin-engine from C.
 *
 * Opens a model file, scores one request (a few behaviours, 3 candidates), prints the CTRs
 * and the model version, then sends a request with an unknown item id and prints the error
 * code and message, and closes the engine. Exits 0 when everything behaved as expected.
 *
 * Build (from the repository root, after `cargo build --release`):
 *     cc -std=c11 -I include examples/c/score.c -L target/release -ltwin_engine \
 *        -Wl,-rpath,target/release -o score
 * Run:
 *     ./score model.twin [auto|cpu|cuda|wgpu]
 *
 * Output (stdout), one fact per line, so that tests can read it back:
 *     version <library version>
 *     model_version <v>
 *     n_items <n>
 *     request_time <t>
 *     long <item> <timestamp> <play_time> <completion> <size>     (one line per behaviour)
 *     short <item> <timestamp> <play_time> <completion> <size>
 *     ctr <item> <ctr>                                            (one line per candidate)
 *     scored_by <model version>
 *     bad_request <code> <name>: <message>
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "twin_engine.h"

static const char* status_name(int32_t code) {
    switch (code) {
        case TWIN_OK: return "TWIN_OK";
        case TWIN_ERR_NULL_ARG: return "TWIN_ERR_NULL_ARG";
        case TWIN_ERR_INVALID_INPUT: return "TWIN_ERR_INVALID_INPUT";
        case TWIN_ERR_TOO_LARGE: return "TWIN_ERR_TOO_LARGE";
        case TWIN_ERR_IO: return "TWIN_ERR_IO";
        case TWIN_ERR_CORRUPT_FILE: return "TWIN_ERR_CORRUPT_FILE";
        case TWIN_ERR_BACKEND: return "TWIN_ERR_BACKEND";
        case TWIN_ERR_OVERLOADED: return "TWIN_ERR_OVERLOADED";
        case TWIN_ERR_BUFFER_TOO_SMALL: return "TWIN_ERR_BUFFER_TOO_SMALL";
        case TWIN_ERR_PANIC: return "TWIN_ERR_PANIC";
        case TWIN_ERR_UNSUPPORTED_VERSION: return "TWIN_ERR_UNSUPPORTED_VERSION";
        case TWIN_ERR_BACKEND_UNAVAILABLE: return "TWIN_ERR_BACKEND_UNAVAILABLE";
        case TWIN_ERR_INTERNAL: return "TWIN_ERR_INTERNAL";
        default: return "unknown status";
    }
}

/* The last error message of this thread, in a malloc'ed string (free it). Shows the
 * two-call pattern: ask for the length, then fetch the whole message. */
static char* last_error(void) {
    size_t n = twin_last_error(NULL, 0);
    char* msg = malloc(n + 1);
    if (msg == NULL) return NULL;
    twin_last_error(msg, n + 1);
    return msg;
}

static void report(FILE* f, const char* what, int32_t code) {
    char* msg = last_error();
    fprintf(f, "%s %d %s: %s\n", what, (int)code, status_name(code), msg ? msg : "(out of memory)");
    free(msg);
}

static void print_behaviours(const char* name, const twin_behaviour* b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        printf("%s %" PRIu32 " %" PRId64 " %.9g %.9g %" PRIu32 "\n", name, b[i].item, b[i].timestamp,
               (double)b[i].play_time, (double)b[i].completion, b[i].size);
    }
}

static int parse_backend(const char* s, int32_t* out) {
    static const struct { const char* name; int32_t value; } names[] = {
        {"auto", TWIN_BACKEND_AUTO}, {"cpu", TWIN_BACKEND_CPU}, {"cuda", TWIN_BACKEND_CUDA}, {"wgpu", TWIN_BACKEND_WGPU},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].value;
            return 1;
        }
    }
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s MODEL_FILE [auto|cpu|cuda|wgpu]\n", argv[0]);
        return 2;
    }
    printf("version %s\n", twin_version_string());

    twin_engine_options opts;
    if (twin_engine_options_default(&opts) != TWIN_OK) return 1;
    if (argc == 3 && !parse_backend(argv[2], &opts.backend)) {
        fprintf(stderr, "unknown backend '%s'\n", argv[2]);
        return 2;
    }
    opts.variant = TWIN_VARIANT_TWIN;

    twin_engine* engine = NULL;
    int32_t rc = twin_engine_open(argv[1], &opts, &engine);
    if (rc != TWIN_OK) {
        report(stderr, "open_failed", rc);
        return 1;
    }
    uint64_t version = twin_engine_model_version(engine);
    uint64_t n_items = twin_engine_n_items(engine);
    printf("model_version %" PRIu64 "\nn_items %" PRIu64 "\n", version, n_items);
    if (version == 0 || n_items < 2) {
        fprintf(stderr, "unexpected: model version %" PRIu64 ", %" PRIu64 " items\n", version, n_items);
        twin_engine_close(engine);
        return 1;
    }
#define ITEM(k) ((uint32_t)(((uint64_t)(k) * 37u + 11u) % n_items))

    /* A user with a few long-term behaviours (oldest first) and two recent ones. */
    const int64_t now = 1700100000;
    twin_behaviour long_seq[6];
    for (int i = 0; i < 6; i++) {
        long_seq[i].item = ITEM(i);
        long_seq[i].timestamp = now - 86400 * (int64_t)(30 - 5 * i);
        long_seq[i].play_time = 12.5f + 7.0f * (float)i;
        long_seq[i].completion = 0.125f * (float)(i + 1);
        long_seq[i].size = 1;
    }
    twin_behaviour short_seq[2] = {
        {ITEM(20), now - 600, 30.0f, 0.75f, 1},
        {ITEM(21), now - 120, 4.5f, 0.25f, 1},
    };
    uint32_t candidates[3] = {ITEM(40), ITEM(41), ITEM(42)};

    twin_request req;
    memset(&req, 0, sizeof req);
    req.request_time = now;
    req.long_seq = long_seq;
    req.long_len = 6;
    req.short_seq = short_seq;
    req.short_len = 2;
    req.candidates = candidates;
    req.n_candidates = 3;

    printf("request_time %" PRId64 "\n", req.request_time);
    print_behaviours("long", long_seq, req.long_len);
    print_behaviours("short", short_seq, req.short_len);

    int failed = 0;
    float ctr[3];
    uint64_t scored_by = 0;
    rc = twin_engine_score(engine, &req, ctr, 3, &scored_by);
    if (rc != TWIN_OK) {
        report(stderr, "score_failed", rc);
        twin_engine_close(engine);
        return 1;
    }
    for (int i = 0; i < 3; i++) {
        printf("ctr %" PRIu32 " %.9g\n", candidates[i], (double)ctr[i]);
        if (!(ctr[i] > 0.0f && ctr[i] < 1.0f)) { /* also catches NaN */
            fprintf(stderr, "unexpected: ctr[%d] = %g is not in (0, 1)\n", i, (double)ctr[i]);
            failed = 1;
        }
    }
    printf("scored_by %" PRIu64 "\n", scored_by);
    if (scored_by != version) {
        fprintf(stderr, "unexpected: scored by version %" PRIu64 ", serving %" PRIu64 "\n", scored_by, version);
        failed = 1;
    }

    /* An item id outside the catalogue: refused with TWIN_ERR_INVALID_INPUT and a message
     * naming the field and the value. */
    uint32_t bad[2] = {candidates[0], (uint32_t)n_items};
    req.candidates = bad;
    req.n_candidates = 2;
    rc = twin_engine_score(engine, &req, ctr, 3, NULL);
    report(stdout, "bad_request", rc);
    if (rc != TWIN_ERR_INVALID_INPUT || twin_last_error_code() != rc || twin_last_error(NULL, 0) == 0) {
        fprintf(stderr, "unexpected: an unknown item id gave status %d\n", (int)rc);
        failed = 1;
    }

    twin_engine_close(engine);
    return failed;
}
