/* Client side of the engine service protocol (docs/PROTOCOL.md): one connection per caller,
 * pixels in shared memory passed with SCM_RIGHTS. No OpenFX types here. */
#ifndef VST_SERVICE_CLIENT_H
#define VST_SERVICE_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#define VST_MAX_STYLES 8
#define VST_MAX_PLAN 4096
#define VST_ERR_LEN 1024
#define VST_FULL_STRENGTH 1u /* analysis flag: skip the clip's own colours (strength 1 only) */
#define VST_DEFLICKER 2u     /* analysis flag: every frame is sent, its exposure evened out */
#define VST_PER_SHOT 4u      /* analysis flag: every frame is sent, each shot analysed on its own */

/* A packed, top-row-first RGBA image in shared memory (depth 1: uint8, 4: float32). */
typedef struct vst_shm {
    int fd;
    unsigned char *data;
    size_t size;
    uint32_t width, height;
    uint8_t depth;
} vst_shm;

typedef struct vst_conn {
    int fd;                /* -1 once closed or after a transport failure */
    uint32_t next_id;
    double timeout_s;      /* per request (VST_SERVICE_TIMEOUT) */
    uint32_t err_code;     /* code of the last ERROR reply, 0 for local/transport errors */
    char err[VST_ERR_LEN]; /* what went wrong, for the user */
    unsigned char *buf;    /* request and reply payloads */
} vst_conn;

/* Socket path: $VST_SERVICE_SOCKET, else $XDG_RUNTIME_DIR/vst-engine/engine.sock,
 * else /tmp/vst-engine-<uid>/engine.sock. Returns 0, or -1 if it does not fit. */
int vst_socket_path(char *out, size_t len);

/* Connects to the service, starting it (detached) when nothing listens. 0 or -1 (c->err). */
int vst_open(vst_conn *c);
void vst_close(vst_conn *c);

int vst_shm_create(vst_shm *m, uint32_t width, uint32_t height, uint8_t depth, char *err, size_t errlen);
void vst_shm_destroy(vst_shm *m);

/* Requests: 0 on success, -1 with c->err (and c->err_code for ERROR replies). */
int vst_hello(vst_conn *c, const char *client, char *version, size_t vlen, char *model, size_t mlen,
              char *device, size_t dlen, int *trained);
int vst_sample_plan(vst_conn *c, int32_t first, int32_t last, uint32_t interval, int32_t *frames,
                    uint32_t max_frames, uint32_t *count);
/* flags: VST_FULL_STRENGTH, VST_DEFLICKER, VST_PER_SHOT (with either of the last two every frame of
 * first..last is sent, not only the sampled ones); base: "" or the id of a full-strength analysis of
 * the same frames, to which this one adds the clip's own colours (flags 0, or VST_PER_SHOT for a base
 * analysed with it). */
int vst_analyze_begin(vst_conn *c, int32_t first, int32_t last, uint32_t interval, uint32_t max_side,
                      uint32_t n, const char *const *paths, const char *label, uint32_t flags, const char *base,
                      uint32_t *session);
int vst_analyze_frame(vst_conn *c, uint32_t session, int32_t frame, const vst_shm *image);
int vst_analyze_end(vst_conn *c, uint32_t session, char features_id[65]);
/* frame: the image's host frame number (deflickered features correct it by that frame's values). */
int vst_stylize(vst_conn *c, const vst_shm *image, float strength, int preserve_colours, int consistency,
                uint32_t max_side, int32_t frame, const char *features_id, uint32_t n, const char *const *paths,
                const float *weights);

#endif
