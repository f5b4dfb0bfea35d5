/*
 * A minimal mediator plugin written in C against plexus-plugin.h: proof that the ABI
 * is plain C. Messages are files in a directory.
 *
 * Settings (YAML subset, one "key: value" per line):
 *     dir: /path/to/shared/dir
 *     address: alice
 *
 * send(to) writes "<to>~<from>~<n>.msg" atomically (temporary dot-name, then rename);
 * receive claims "<address>~*.msg" by renaming it to a dot-name before reading it.
 *
 * Build: gcc -shared -fPIC -std=c99 -I plugins plugins/c-example/example.c \
 *            -o libplexus_cexample.so
 */
#define _POSIX_C_SOURCE 200809L
#include "plexus-plugin.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct Example {
    char dir[512];
    char address[64];
    unsigned long counter;
    PxHost host;
} Example;

static void set_err(PxErrBuf *err, const char *msg) {
    if (err == NULL || err->ptr == NULL) return;
    size_t n = strlen(msg);
    if (n > err->cap) n = err->cap;
    memcpy(err->ptr, msg, n);
    err->len = n;
}

static void say(const Example *ex, uint32_t level, const char *msg) {
    if (ex->host.log == NULL || level > ex->host.max_log_level) return;
    PxBytes target = {(const uint8_t *)"c-example", 9};
    PxBytes text = {(const uint8_t *)msg, strlen(msg)};
    ex->host.log(ex->host.ctx, level, target, text);
}

static PxOwnedBytes owned_copy(const void *data, size_t len) {
    PxOwnedBytes b = {NULL, 0};
    if (len == 0) return b;
    b.ptr = malloc(len);
    if (b.ptr == NULL) return b;
    memcpy(b.ptr, data, len);
    b.len = len;
    return b;
}

static void ex_free_bytes(PxOwnedBytes b) { free(b.ptr); }

/* Copies the value of "key: value" from settings into out; 0 when missing. */
static int setting(PxBytes s, const char *key, char *out, size_t cap) {
    size_t klen = strlen(key), i = 0;
    while (i < s.len) {
        size_t end = i;
        while (end < s.len && s.ptr[end] != '\n') end++;
        if (end - i > klen && memcmp(s.ptr + i, key, klen) == 0 && s.ptr[i + klen] == ':') {
            size_t v = i + klen + 1;
            while (v < end && s.ptr[v] == ' ') v++;
            if (end - v == 0 || end - v >= cap) return 0;
            memcpy(out, s.ptr + v, end - v);
            out[end - v] = '\0';
            return 1;
        }
        i = end + 1;
    }
    return 0;
}

static int32_t ex_create(PxBytes settings, const PxHost *host, PxHandle **out, PxErrBuf *err) {
    Example *ex = calloc(1, sizeof(Example));
    if (ex == NULL) { set_err(err, "out of memory"); return PX_ERR_IO; }
    if (!setting(settings, "dir", ex->dir, sizeof ex->dir) ||
        !setting(settings, "address", ex->address, sizeof ex->address)) {
        free(ex);
        set_err(err, "settings need `dir: <path>` and `address: <name>`");
        return PX_ERR_CONFIG;
    }
    /* Only the first release's fields (every host passes them): this plugin uses
       nothing newer, and an older host's struct is shorter than today's PxHost. */
    if (host != NULL && host->struct_size >= PX_HOST_V1_SIZE) memcpy(&ex->host, host, PX_HOST_V1_SIZE);
    say(ex, PX_LOG_INFO, "c-example mediator ready");
    *out = (PxHandle *)ex;
    return PX_OK;
}

static int32_t ex_send(PxHandle *h, PxBytes to, PxBytes sealed, PxErrBuf *err) {
    Example *ex = (Example *)h;
    char tmp[1024], final[1024];
    if (to.len == 0 || to.len > 63 || memchr(to.ptr, '/', to.len) || memchr(to.ptr, '~', to.len)) {
        set_err(err, "bad recipient address");
        return PX_ERR_INVALID_ARGUMENT;
    }
    ex->counter++;
    snprintf(tmp, sizeof tmp, "%s/.%s.%ld.%lu.tmp", ex->dir, ex->address, (long)getpid(), ex->counter);
    snprintf(final, sizeof final, "%s/%.*s~%s~%ld-%lu.msg", ex->dir, (int)to.len, (const char *)to.ptr,
             ex->address, (long)getpid(), ex->counter);
    FILE *f = fopen(tmp, "wb");
    if (f == NULL) { set_err(err, strerror(errno)); return PX_ERR_IO; }
    int ok = fwrite(sealed.ptr, 1, sealed.len, f) == sealed.len;
    ok = (fflush(f) == 0) && ok && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, final) != 0) {
        unlink(tmp);
        set_err(err, "could not write the message file");
        return PX_ERR_IO;
    }
    return PX_OK;
}

/* Claims one message for us; 1 with *out filled, 0 when none, -1 on error. */
static int try_take(Example *ex, PxMessage *out) {
    DIR *d = opendir(ex->dir);
    if (d == NULL) return -1;
    size_t alen = strlen(ex->address);
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        size_t nlen = strlen(n);
        if (nlen < alen + 6 || strncmp(n, ex->address, alen) != 0 || n[alen] != '~' ||
            strcmp(n + nlen - 4, ".msg") != 0)
            continue;
        char src[1024], claimed[1024], id[300];
        snprintf(id, sizeof id, ".claimed.%s", n);
        snprintf(src, sizeof src, "%s/%s", ex->dir, n);
        snprintf(claimed, sizeof claimed, "%s/%s", ex->dir, id);
        if (rename(src, claimed) != 0) continue; /* someone else took it */
        FILE *f = fopen(claimed, "rb");
        if (f == NULL) continue;
        unsigned char buf[65536];
        size_t len = fread(buf, 1, sizeof buf, f);
        fclose(f);
        const char *from = n + alen + 1;
        const char *tilde = strchr(from, '~');
        size_t flen = tilde ? (size_t)(tilde - from) : 0;
        out->id = owned_copy(id, strlen(id));
        out->from = owned_copy(from, flen);
        out->sealed = owned_copy(buf, len);
        found = 1;
    }
    closedir(d);
    return found;
}

static int32_t ex_receive(PxHandle *h, uint64_t timeout_ms, PxMessage *out, PxErrBuf *err) {
    Example *ex = (Example *)h;
    uint64_t waited = 0;
    for (;;) {
        int r = try_take(ex, out);
        if (r < 0) { set_err(err, "cannot read the message directory"); return PX_ERR_IO; }
        if (r > 0) return PX_OK;
        if (waited >= timeout_ms) return PX_NONE;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        waited += 20;
    }
}

static int32_t ex_acknowledge(PxHandle *h, PxBytes id, uint32_t outcome, PxErrBuf *err) {
    Example *ex = (Example *)h;
    char path[1024], kept[1100];
    if (id.len < 9 || id.len > 255 || memcmp(id.ptr, ".claimed.", 9) != 0 || memchr(id.ptr, '/', id.len)) {
        set_err(err, "not a message id of this plugin");
        return PX_ERR_INVALID_ARGUMENT;
    }
    snprintf(path, sizeof path, "%s/%.*s", ex->dir, (int)id.len, (const char *)id.ptr);
    if (outcome == PX_OUTCOME_HANDLED) {
        if (unlink(path) != 0) { set_err(err, strerror(errno)); return PX_ERR_IO; }
    } else {
        snprintf(kept, sizeof kept, "%s/%.*s.rejected", ex->dir, (int)id.len - 9, (const char *)id.ptr + 9);
        if (rename(path, kept) != 0) { set_err(err, strerror(errno)); return PX_ERR_IO; }
    }
    return PX_OK;
}

static void ex_destroy(PxHandle *h) { free(h); }

static const PxMediatorVtable VTABLE = {
    sizeof(PxMediatorVtable), 0, ex_free_bytes, ex_create, ex_send, ex_receive, ex_acknowledge,
    ex_destroy,
};

static const PxDescriptor DESCRIPTOR = {
    PX_ABI_VERSION, sizeof(PxDescriptor), PX_KIND_MEDIATOR, 0,
    {(const uint8_t *)"c-example", 9}, &VTABLE,
};

const PxDescriptor *plexus_plugin_entry_v1(void) { return &DESCRIPTOR; }
