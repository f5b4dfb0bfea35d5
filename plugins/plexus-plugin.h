/*
 * plexus-plugin.h — the C ABI between plexus and its dynamic-library plugins, version 1.
 *
 * Mirrors the Rust crate plexus-plugin-abi (plugins/abi/src/lib.rs); a test compiles this
 * header and compares every size, offset and constant with the Rust definitions.
 *
 * A plugin is a shared library named libplexus_<name>.so exporting one function:
 *
 *     const PxDescriptor *plexus_plugin_entry_v1(void);
 *
 * returning a pointer to a static descriptor. Rules:
 *  - the host checks abi_version and struct_size before reading anything else;
 *  - structs only grow at the end (struct_size tells which fields the other side knows);
 *  - whoever allocates frees: PxOwnedBytes returned to the host are released with the
 *    vtable's free_bytes; error messages go into the host-owned PxErrBuf;
 *  - a handle is used by one thread at a time but may move between threads;
 *  - strings are UTF-8, never NUL-terminated: always pointer + length;
 *  - the library is never unloaded.
 */
#ifndef PLEXUS_PLUGIN_H
#define PLEXUS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PX_ABI_VERSION 1u
#define PX_ENTRY_SYMBOL "plexus_plugin_entry_v1"

/* Status codes returned by every call. */
#define PX_OK 0                   /* success */
#define PX_NONE 1                 /* receive: nothing arrived within the timeout */
#define PX_ERR_CONFIG (-1)        /* settings are invalid */
#define PX_ERR_UNREACHABLE (-2)   /* channel unreachable, a retry may help; from an
                                     executor: path lost, the inviter invites again */
#define PX_ERR_AUTH (-3)          /* channel refused the credentials */
#define PX_ERR_PROTOCOL (-4)      /* channel answered something unexpected */
#define PX_ERR_IO (-5)            /* local I/O failed */
#define PX_ERR_PANIC (-6)         /* the plugin panicked / hit an internal bug */
#define PX_ERR_INVALID_ARGUMENT (-7) /* the host passed something invalid */
#define PX_ERR_SPAWN (-8)         /* executor: the application could not start */
#define PX_ERR_FAILED (-9)        /* executor: the application failed */

/* Descriptor kinds. */
#define PX_KIND_MEDIATOR 1u
#define PX_KIND_EXECUTOR 2u

/* Acknowledgement outcomes. */
#define PX_OUTCOME_HANDLED 1u
#define PX_OUTCOME_REJECTED 2u

/* Log levels (equal to the Rust log crate's Level values). */
#define PX_LOG_ERROR 1u
#define PX_LOG_WARN 2u
#define PX_LOG_INFO 3u
#define PX_LOG_DEBUG 4u
#define PX_LOG_TRACE 5u

/* Borrowed bytes, valid only during the call. ptr may be NULL when len is 0. */
typedef struct PxBytes {
    const uint8_t *ptr;
    size_t len;
} PxBytes;

/* Plugin-allocated bytes handed to the host; released with free_bytes(ptr, len). */
typedef struct PxOwnedBytes {
    uint8_t *ptr;
    size_t len;
} PxOwnedBytes;

/* Host-owned buffer for an error message: write at most cap bytes, then set len. */
typedef struct PxErrBuf {
    uint8_t *ptr;
    size_t cap;
    size_t len;
} PxErrBuf;

/* Opaque plugin instance. */
typedef struct PxHandle PxHandle;

typedef void (*PxLogFn)(void *ctx, uint32_t level, PxBytes target, PxBytes message);

/* Host callbacks, valid until destroy returns. */
typedef struct PxHost {
    uint32_t struct_size;
    uint32_t max_log_level; /* most verbose PX_LOG_* the host records, 0 for none */
    void *ctx;
    PxLogFn log;
    /* Added later: read them only when struct_size >= PX_HOST_CHANNEL_SIZE
       (a host of the first release passes PX_HOST_V1_SIZE and lacks them). */
    PxBytes host_id;        /* this host's id, UTF-8, may be empty */
    PxBytes peer_id;        /* the peer's id, UTF-8, may be empty */
    PxBytes channel_secret; /* same bytes on both sides, may be empty, never log it */
} PxHost;

#define PX_HOST_V1_SIZE ((uint32_t)(offsetof(PxHost, log) + sizeof(PxLogFn)))
#define PX_HOST_CHANNEL_SIZE ((uint32_t)(offsetof(PxHost, channel_secret) + sizeof(PxBytes)))

typedef struct PxDescriptor {
    uint32_t abi_version; /* PX_ABI_VERSION */
    uint32_t struct_size; /* sizeof(PxDescriptor) */
    uint32_t kind;        /* PX_KIND_* */
    uint32_t reserved;
    PxBytes name;         /* static UTF-8 name */
    const void *vtable;   /* PxMediatorVtable or PxExecutorVtable */
} PxDescriptor;

typedef const PxDescriptor *(*PxEntryFn)(void);

typedef int32_t (*PxCreateFn)(PxBytes settings, const PxHost *host, PxHandle **out,
                              PxErrBuf *err);
typedef void (*PxDestroyFn)(PxHandle *handle);
typedef void (*PxFreeBytesFn)(PxOwnedBytes bytes);

/* A message picked up by receive; every field is plugin-allocated. */
typedef struct PxMessage {
    PxOwnedBytes id;     /* used to acknowledge, UTF-8 */
    PxOwnedBytes from;   /* sender's address on this channel, UTF-8 */
    PxOwnedBytes sealed; /* the sealed bytes */
} PxMessage;

typedef struct PxMediatorVtable {
    uint32_t struct_size; /* sizeof(PxMediatorVtable) */
    uint32_t reserved;
    PxFreeBytesFn free_bytes;
    PxCreateFn create;
    int32_t (*send)(PxHandle *handle, PxBytes to, PxBytes sealed, PxErrBuf *err);
    /* PX_OK with *out filled, PX_NONE on timeout, or an error. */
    int32_t (*receive)(PxHandle *handle, uint64_t timeout_ms, PxMessage *out, PxErrBuf *err);
    int32_t (*acknowledge)(PxHandle *handle, PxBytes id, uint32_t outcome, PxErrBuf *err);
    PxDestroyFn destroy;
} PxMediatorVtable;

/* An open corridor. Endpoints are UTF-8 "ip:port" ("[v6]:port"). */
typedef struct PxCorridor {
    uint32_t struct_size;
    uint32_t accepted; /* 1 accepted, 0 invited */
    PxBytes inner;
    PxBytes outer;
    PxBytes peer;
    PxBytes host_id;
    PxBytes peer_id;
    uint8_t key[32];
} PxCorridor;

typedef struct PxRunResult {
    uint32_t has_status;
    int32_t status;
    PxOwnedBytes output; /* plugin-allocated UTF-8, may be empty */
} PxRunResult;

typedef struct PxExecutorVtable {
    uint32_t struct_size; /* sizeof(PxExecutorVtable) */
    uint32_t reserved;
    PxFreeBytesFn free_bytes;
    PxCreateFn create;
    int32_t (*run)(PxHandle *handle, const PxCorridor *corridor, PxRunResult *out,
                   PxErrBuf *err);
    PxDestroyFn destroy;
} PxExecutorVtable;

#ifdef __cplusplus
}
#endif

#endif /* PLEXUS_PLUGIN_H */
