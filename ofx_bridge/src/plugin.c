/* Video Style Transfer: an OpenFX image effect that forwards frames to the vst_engine service.
 *
 * The plugin only moves pixels and parameters: all the maths runs in the engine service
 * (docs/PROTOCOL.md), a separate process, so an engine failure can never take the host down.
 * Every failure becomes a host message and kOfxStatFailed.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ofx_decls.h"
#include "service_client.h"

#define PLUGIN_ID "org.videostyletransfer.VideoStyleTransfer"
#define MAX_STYLES VST_MAX_STYLES
#define ERR_LEN VST_ERR_LEN

#define P_ANALYZE "analyze"
#define P_STATUS "engineStatus"
#define P_FEATURES "featuresId"
#define P_STRENGTH "strength"
#define P_PRESERVE "preserveColours"
#define P_CONSISTENCY "consistency"
#define P_MAX_SIDE "maxSide"
#define P_DEFLICKER "deflicker"
#define P_PER_SHOT "perShot"

static OfxHost *g_host;
static const OfxPropertySuiteV1 *g_prop;
static const OfxImageEffectSuiteV1 *g_effect;
static const OfxParameterSuiteV1 *g_param;
static const OfxMessageSuiteV1 *g_msg; /* optional */

typedef struct Instance {
    OfxImageEffectHandle effect;
    OfxImageClipHandle src, dst;
    OfxParamHandle style[MAX_STYLES], weight[MAX_STYLES];
    OfxParamHandle strength, preserve, consistency, max_side, deflicker, per_shot, status, features;

    /* Held through a whole analysis, so concurrent renders analyse once and then share it. */
    pthread_mutex_t analysis_lock;
    /* Guards the fields below (short critical sections only). */
    pthread_mutex_t lock;
    char cached_id[65];  /* features of the last analysis; Render cannot store it in the param */
    uint64_t cached_key; /* hash of the settings that analysis used */
    int cached_own;      /* whether they include the clip's own colours (what strength < 1 needs) */
    int32_t plan_first, plan_last;
    uint32_t plan_count; /* 0: no cached SAMPLE_PLAN answer */
    int32_t plan[VST_MAX_PLAN];
    char last_error[ERR_LEN]; /* shown in the status param at the next chance to set it */
} Instance;

typedef struct Settings {
    uint32_t n; /* styles with a path, in slot order */
    char *paths[MAX_STYLES];
    float weights[MAX_STYLES];
    double strength;
    int preserve, consistency;
    int deflicker; /* only with consistency: the analysis then reads every frame */
    int per_shot;  /* only with consistency: each shot analysed on its own (every frame read) */
    uint32_t max_side;
    char features_id[65]; /* the hidden param's value when it is a valid id, else "" */
} Settings;

/* An RGBA image with OFX addressing: rows go upwards from bounds.y1 at data, any row stride. */
typedef struct View {
    unsigned char *data;
    OfxRectI b;
    ptrdiff_t row_bytes;
    int depth; /* bytes per channel: 1 or 4 */
    int premultiplied; /* RGB carries alpha already (kOfxImagePreMultiplied) */
} View;

/* ---- small helpers ------------------------------------------------------------------- */

static void fmt(char *out, size_t len, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *out, size_t len, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vsnprintf(out, len, f, ap);
    va_end(ap);
}

static int streq(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

static void post(Instance *in, const char *type, const char *text)
{
    if (g_msg && g_msg->message)
        g_msg->message(in ? (void *)in->effect : NULL, type, "VideoStyleTransfer", "%s", text);
}

static void set_status(Instance *in, const char *text)
{
    if (in->status)
        g_param->paramSetValue(in->status, text);
}

/* Remembers an error for the status param, and posts it to the host. */
static void report(Instance *in, const char *text)
{
    pthread_mutex_lock(&in->lock);
    fmt(in->last_error, sizeof in->last_error, "%s", text);
    pthread_mutex_unlock(&in->lock);
    post(in, kOfxMessageError, text);
}

static Instance *instance_of(const void *handle)
{
    OfxPropertySetHandle props = NULL;
    void *p = NULL;
    if (!handle || g_effect->getPropertySet((OfxImageEffectHandle)handle, &props) != kOfxStatOK ||
        g_prop->propGetPointer(props, kOfxPropInstanceData, 0, &p) != kOfxStatOK)
        return NULL;
    return p;
}

static int is_hex_id(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return i == 64;
}

/* Nearest frame number (without libm: the plugin links libc only). */
static int32_t round_frame(double t) { return (int32_t)(t < 0 ? t - 0.5 : t + 0.5); }

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* ---- parameters ---------------------------------------------------------------------- */

/* A copy of a string param's value at time t, trimmed; NULL when empty or unreadable. */
static char *get_string(OfxParamHandle h, OfxTime t)
{
    char *v = NULL;
    if (!h || g_param->paramGetValueAtTime(h, t, &v) != kOfxStatOK || !v)
        return NULL;
    while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')
        v++;
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\n' || v[n - 1] == '\r'))
        n--;
    if (!n)
        return NULL;
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, v, n);
        out[n] = '\0';
    }
    return out;
}

static double get_double(OfxParamHandle h, OfxTime t, double fallback)
{
    double v = fallback;
    if (!h || g_param->paramGetValueAtTime(h, t, &v) != kOfxStatOK || !isfinite(v))
        return fallback;
    return v;
}

static int get_int(OfxParamHandle h, OfxTime t, int fallback)
{
    int v = fallback;
    if (!h || g_param->paramGetValueAtTime(h, t, &v) != kOfxStatOK)
        return fallback;
    return v;
}

static void free_settings(Settings *s)
{
    for (uint32_t i = 0; i < s->n; i++)
        free(s->paths[i]);
    s->n = 0;
}

/* The service runs in another working directory: relative style paths are made absolute. */
static char *absolute_path(char *p)
{
    if (!p || p[0] == '/')
        return p;
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd))
        return p;
    size_t n = strlen(cwd) + strlen(p) + 2;
    char *out = malloc(n);
    if (!out)
        return p;
    snprintf(out, n, "%s/%s", cwd, p);
    free(p);
    return out;
}

static void read_settings(Instance *in, OfxTime t, Settings *s)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < MAX_STYLES; i++) {
        char *path = absolute_path(get_string(in->style[i], t));
        if (!path)
            continue;
        double w = get_double(in->weight[i], t, 1.0);
        s->paths[s->n] = path;
        s->weights[s->n] = (float)(w > 0 ? w : 0);
        s->n++;
    }
    double st = get_double(in->strength, t, 1.0);
    s->strength = st < 0 ? 0 : st > 1 ? 1 : st;
    s->preserve = get_int(in->preserve, t, 0) != 0;
    s->consistency = get_int(in->consistency, t, 1) != 0;
    s->deflicker = s->consistency && get_int(in->deflicker, t, 0) != 0;
    s->per_shot = s->consistency && get_int(in->per_shot, t, 0) != 0;
    int ms = get_int(in->max_side, t, 0);
    s->max_side = ms <= 0 ? 0 : ms < 8 ? 8 : ms > 16384 ? 16384 : (uint32_t)ms; /* service: 0 or 8..16384 */
    char *id = get_string(in->features, t);
    if (id && is_hex_id(id))
        memcpy(s->features_id, id, 65);
    free(id);
}

static int any_weight(const Settings *s)
{
    for (uint32_t i = 0; i < s->n; i++)
        if (s->weights[i] > 0)
            return 1;
    return 0;
}

/* What an analysis depends on: the styles, the processing size, deflicker, shots and the analysed frames. */
static uint64_t analysis_key(const Settings *s, int32_t first, int32_t last)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint32_t i = 0; i < s->n; i++)
        h = fnv1a(h, s->paths[i], strlen(s->paths[i]) + 1);
    h = fnv1a(h, &s->max_side, sizeof s->max_side);
    h = fnv1a(h, &s->deflicker, sizeof s->deflicker);
    h = fnv1a(h, &s->per_shot, sizeof s->per_shot);
    h = fnv1a(h, &first, sizeof first);
    return fnv1a(h, &last, sizeof last);
}

/* Whether some frame of first..last has a strength below 1, i.e. blends towards the clip's own
 * colours. Every frame is read: a host's smooth interpolation may dip below its keys. */
static int needs_own_colours(Instance *in, int32_t first, int32_t last)
{
    for (int64_t t = first; t <= last; t++)
        if (get_double(in->strength, (OfxTime)t, 1.0) < 1)
            return 1;
    return 0;
}

static int source_range(Instance *in, int32_t *first, int32_t *last, char *err)
{
    OfxPropertySetHandle cp = NULL;
    double r[2] = {0, 0};
    if (g_effect->clipGetPropertySet(in->src, &cp) != kOfxStatOK ||
        g_prop->propGetDoubleN(cp, kOfxImageEffectPropFrameRange, 2, r) != kOfxStatOK || !isfinite(r[0]) ||
        !isfinite(r[1]) || r[1] < r[0] || fabs(r[0]) > 1e9 || fabs(r[1]) > 1e9) {
        fmt(err, ERR_LEN, "the host did not report the Source clip's frame range");
        return -1;
    }
    *first = round_frame(r[0]);
    *last = round_frame(r[1]);
    return 0;
}

/* ---- images --------------------------------------------------------------------------- */

/* Fetches a clip image as a View; rejects layouts the engine cannot take. 1: got it, 0: no image. */
static int fetch_image(OfxImageClipHandle clip, OfxTime t, OfxPropertySetHandle *h, View *v, char *err)
{
    *h = NULL;
    if (g_effect->clipGetImage(clip, t, NULL, h) != kOfxStatOK || !*h) {
        *h = NULL;
        return 0;
    }
    char *depth = NULL, *comps = NULL;
    void *data = NULL;
    int rb = 0;
    int bounds[4] = {0, 0, 0, 0};
    g_prop->propGetString(*h, kOfxImageEffectPropPixelDepth, 0, &depth);
    g_prop->propGetString(*h, kOfxImageEffectPropComponents, 0, &comps);
    g_prop->propGetPointer(*h, kOfxImagePropData, 0, &data);
    g_prop->propGetInt(*h, kOfxImagePropRowBytes, 0, &rb);
    g_prop->propGetIntN(*h, kOfxImagePropBounds, 4, bounds);
    char *premult = NULL;
    g_prop->propGetString(*h, kOfxImageEffectPropPreMultiplication, 0, &premult);
    v->premultiplied = streq(premult, kOfxImagePreMultiplied);
    v->data = data;
    v->row_bytes = rb;
    v->b = (OfxRectI){bounds[0], bounds[1], bounds[2], bounds[3]};
    v->depth = streq(depth, kOfxBitDepthByte) ? 1 : streq(depth, kOfxBitDepthFloat) ? 4 : 0;
    const char *why = NULL;
    if (!streq(comps, kOfxImageComponentRGBA))
        why = "only RGBA images are supported";
    else if (!v->depth)
        why = "only 8-bit and 32-bit float images are supported";
    else if (!data || v->b.x2 < v->b.x1 || v->b.y2 < v->b.y1)
        why = "the host gave an image without pixels";
    else if ((size_t)(rb < 0 ? -(ptrdiff_t)rb : rb) < (size_t)(v->b.x2 - v->b.x1) * 4u * (size_t)v->depth)
        why = "the host gave an image with inconsistent row bytes";
    if (why) {
        fmt(err, ERR_LEN, "%s (got %s, %s)", why, comps ? comps : "?", depth ? depth : "?");
        g_effect->clipReleaseImage(*h);
        *h = NULL;
        return -1;
    }
    return 1;
}

static void release(OfxPropertySetHandle *h)
{
    if (*h)
        g_effect->clipReleaseImage(*h);
    *h = NULL;
}

/* The shared-memory buffer seen as a View: packed rows, top row first, so a negative stride. */
static View shm_view(const vst_shm *m, OfxRectI bounds)
{
    ptrdiff_t row = (ptrdiff_t)m->width * 4 * m->depth;
    View v = {m->data + (ptrdiff_t)(m->height - 1) * row, bounds, -row, m->depth, 0};
    return v;
}

static void convert_span(unsigned char *dst, int ddepth, const unsigned char *src, int sdepth, size_t samples)
{
    if (ddepth == sdepth) {
        memcpy(dst, src, samples * (size_t)ddepth);
    } else if (ddepth == 4) { /* byte -> float */
        for (size_t i = 0; i < samples; i++) {
            float f = src[i] / 255.0f;
            memcpy(dst + 4 * i, &f, 4);
        }
    } else { /* float -> byte */
        for (size_t i = 0; i < samples; i++) {
            float f;
            memcpy(&f, src + 4 * i, 4);
            dst[i] = !(f > 0) ? 0 : f >= 1 ? 255 : (unsigned char)(f * 255.0f + 0.5f);
        }
    }
}

/* Copies window (clipped to dst) from src to dst by pixel coordinates; pixels src lacks become 0. */
static void copy_region(View *dst, const View *src, OfxRectI w)
{
    if (w.x1 < dst->b.x1) w.x1 = dst->b.x1;
    if (w.y1 < dst->b.y1) w.y1 = dst->b.y1;
    if (w.x2 > dst->b.x2) w.x2 = dst->b.x2;
    if (w.y2 > dst->b.y2) w.y2 = dst->b.y2;
    if (w.x2 <= w.x1 || w.y2 <= w.y1)
        return;
    int sx1 = src && src->b.x1 > w.x1 ? src->b.x1 : w.x1;
    int sx2 = src && src->b.x2 < w.x2 ? src->b.x2 : w.x2;
    size_t dpx = 4u * (size_t)dst->depth;
    for (int y = w.y1; y < w.y2; y++) {
        unsigned char *drow = dst->data + (ptrdiff_t)(y - dst->b.y1) * dst->row_bytes;
        int inside = src && y >= src->b.y1 && y < src->b.y2 && sx2 > sx1;
        if (!inside) {
            memset(drow + (size_t)(w.x1 - dst->b.x1) * dpx, 0, (size_t)(w.x2 - w.x1) * dpx);
            continue;
        }
        if (sx1 > w.x1)
            memset(drow + (size_t)(w.x1 - dst->b.x1) * dpx, 0, (size_t)(sx1 - w.x1) * dpx);
        if (w.x2 > sx2)
            memset(drow + (size_t)(sx2 - dst->b.x1) * dpx, 0, (size_t)(w.x2 - sx2) * dpx);
        const unsigned char *srow = src->data + (ptrdiff_t)(y - src->b.y1) * src->row_bytes;
        convert_span(drow + (size_t)(sx1 - dst->b.x1) * dpx, dst->depth,
                     srow + (size_t)(sx1 - src->b.x1) * 4u * (size_t)src->depth, src->depth, (size_t)(sx2 - sx1) * 4u);
    }
}

/* Divides (or multiplies) RGB by alpha in place. The network restyles colours: premultiplied
 * edges would reach it darkened and leave it with colour where alpha is 0. */
static void scale_by_alpha(vst_shm *m, int divide)
{
    size_t n = (size_t)m->width * m->height;
    if (m->depth == 1) {
        for (unsigned char *p = m->data; n--; p += 4) {
            unsigned a = p[3];
            for (int c = 0; c < 3; c++) {
                unsigned v = divide ? (a ? (p[c] * 255u + a / 2) / a : p[c]) : (p[c] * a + 127u) / 255u;
                p[c] = (unsigned char)(v > 255 ? 255 : v);
            }
        }
        return;
    }
    for (unsigned char *p = m->data; n--; p += 16) {
        float px[4];
        memcpy(px, p, sizeof px);
        for (int c = 0; c < 3; c++)
            px[c] = divide ? (px[3] > 0 ? px[c] / px[3] : px[c]) : px[c] * px[3];
        memcpy(p, px, sizeof px);
    }
}

/* Packs a source image into fresh shared memory (m must be destroyed by the caller). */
static int pack_into_shm(const View *src, vst_shm *m, char *err)
{
    uint32_t w = (uint32_t)(src->b.x2 - src->b.x1), h = (uint32_t)(src->b.y2 - src->b.y1);
    if (vst_shm_create(m, w, h, (uint8_t)src->depth, err, ERR_LEN) < 0)
        return -1;
    View packed = shm_view(m, src->b);
    copy_region(&packed, src, src->b);
    if (src->premultiplied)
        scale_by_alpha(m, 1);
    return 0;
}

/* ---- engine calls --------------------------------------------------------------------- */

static int get_plan(Instance *in, vst_conn *c, int32_t first, int32_t last, int32_t *frames, uint32_t *count)
{
    pthread_mutex_lock(&in->lock);
    int hit = in->plan_count && in->plan_first == first && in->plan_last == last;
    if (hit) {
        memcpy(frames, in->plan, in->plan_count * sizeof *frames);
        *count = in->plan_count;
    }
    pthread_mutex_unlock(&in->lock);
    if (hit)
        return 0;
    if (vst_sample_plan(c, first, last, 0, frames, VST_MAX_PLAN, count) < 0)
        return -1;
    pthread_mutex_lock(&in->lock);
    memcpy(in->plan, frames, *count * sizeof *frames);
    in->plan_first = first;
    in->plan_last = last;
    in->plan_count = *count;
    pthread_mutex_unlock(&in->lock);
    return 0;
}

/* SAMPLE_PLAN, ANALYZE_BEGIN, one ANALYZE_FRAME per sampled frame (every frame with VST_DEFLICKER or
 * VST_PER_SHOT;
 * fetched from the host with temporal access and released at once), ANALYZE_END. in_render: the
 * host's abort is honoured. flags and base as in vst_analyze_begin. */
static int analyze_clip(Instance *in, const Settings *s, int32_t first, int32_t last, int in_render,
                        uint32_t flags, const char *base, char id[65], uint32_t *frames_done, char *err)
{
    int32_t *plan = malloc(VST_MAX_PLAN * sizeof *plan);
    vst_conn c;
    vst_shm m = {.fd = -1};
    uint32_t count = 0, session = 0;
    int rc = -1, session_open = 0;
    if (!plan) {
        fmt(err, ERR_LEN, "out of memory");
        return -1;
    }
    if (vst_open(&c) < 0 || get_plan(in, &c, first, last, plan, &count) < 0)
        goto engine_error;
    char label[256];
    char *host_name = NULL;
    if (g_host)
        g_prop->propGetString(g_host->host, kOfxPropName, 0, &host_name);
    fmt(label, sizeof label, "OpenFX %s, Source frames %d-%d", host_name ? host_name : "host", first, last);
    if (vst_analyze_begin(&c, first, last, 0, s->max_side, s->n, (const char *const *)s->paths, label, flags, base,
                          &session) < 0)
        goto engine_error;
    session_open = 1;
    int every = (flags & (VST_DEFLICKER | VST_PER_SHOT)) != 0;
    if (every)
        count = (uint32_t)((int64_t)last - first + 1);
    for (uint32_t i = 0; i < count; i++) {
        int32_t frame = every ? first + (int32_t)i : plan[i];
        if (in_render && g_effect->abort && g_effect->abort(in->effect)) {
            fmt(err, ERR_LEN, "analysis interrupted: the host aborted the render");
            goto done;
        }
        OfxPropertySetHandle h;
        View v;
        int got = fetch_image(in->src, (OfxTime)frame, &h, &v, err);
        if (got == 0)
            fmt(err, ERR_LEN, "the host did not provide Source frame %d for the analysis "
                              "(temporal clip access)", frame);
        if (got <= 0)
            goto done;
        uint32_t w = (uint32_t)(v.b.x2 - v.b.x1), ht = (uint32_t)(v.b.y2 - v.b.y1);
        if (m.fd < 0 || m.width != w || m.height != ht || m.depth != v.depth) {
            vst_shm_destroy(&m);
            if (vst_shm_create(&m, w, ht, (uint8_t)v.depth, err, ERR_LEN) < 0) {
                release(&h);
                goto done;
            }
        }
        View packed = shm_view(&m, v.b);
        copy_region(&packed, &v, v.b);
        if (v.premultiplied)
            scale_by_alpha(&m, 1);
        release(&h);
        if (vst_analyze_frame(&c, session, frame, &m) < 0)
            goto engine_error;
    }
    session_open = 0; /* ANALYZE_END closes the session whatever its answer */
    if (vst_analyze_end(&c, session, id) < 0)
        goto engine_error;
    *frames_done = count;
    rc = 0;
    goto done;
engine_error:
    fmt(err, ERR_LEN, "Video Style Transfer analysis failed: %s", c.err);
done:
    if (session_open && c.fd >= 0) {
        /* The protocol has no abort: an incomplete ANALYZE_END frees the session (the service
         * keeps at most 4), and its error is expected. */
        char ignored[65];
        vst_analyze_end(&c, session, ignored);
    }
    vst_shm_destroy(&m);
    vst_close(&c);
    free(plan);
    return rc;
}

/* The features id to stylize with: the stored param, else this session's analysis of the same
 * settings, else a new analysis (run once even when several frames render concurrently). With
 * full strength throughout the clip that analysis skips the clip's own colours (about half the
 * work); a frame with a strength below 1 later adds them, analysing only those. */
static int ensure_features(Instance *in, const Settings *s, char id[65], char *err)
{
    if (s->features_id[0]) {
        memcpy(id, s->features_id, 65);
        return 0;
    }
    int32_t first, last;
    if (source_range(in, &first, &last, err) < 0)
        return -1;
    uint64_t key = analysis_key(s, first, last);
    pthread_mutex_lock(&in->analysis_lock);
    pthread_mutex_lock(&in->lock);
    int hit = in->cached_id[0] && in->cached_key == key, own = in->cached_own;
    if (hit)
        memcpy(id, in->cached_id, 65);
    pthread_mutex_unlock(&in->lock);
    int rc = 0;
    if (!hit || (!own && s->strength < 1)) {
        char base[65] = "";
        if (hit) /* full-strength features: add the clip's own colours to them */
            memcpy(base, id, 65);
        own = hit || needs_own_colours(in, first, last);
        uint32_t frames = 0;
        /* A completion (base) keeps the base's deflicker corrections and shots; of the flags it takes
         * only PER_SHOT, which sends it every frame again. */
        uint32_t flags = (s->per_shot ? VST_PER_SHOT : 0) |
                         (base[0] ? 0 : (own ? 0 : VST_FULL_STRENGTH) | (s->deflicker ? VST_DEFLICKER : 0));
        rc = analyze_clip(in, s, first, last, 1, flags, base, id, &frames, err);
        if (rc == 0) {
            pthread_mutex_lock(&in->lock);
            memcpy(in->cached_id, id, 65);
            in->cached_key = key;
            in->cached_own = own;
            pthread_mutex_unlock(&in->lock);
        }
    }
    pthread_mutex_unlock(&in->analysis_lock);
    return rc;
}

/* ---- actions --------------------------------------------------------------------------- */

static OfxStatus on_load(void)
{
    if (!g_host || !g_host->fetchSuite)
        return kOfxStatErrMissingHostFeature;
    g_prop = g_host->fetchSuite(g_host->host, kOfxPropertySuite, 1);
    g_effect = g_host->fetchSuite(g_host->host, kOfxImageEffectSuite, 1);
    g_param = g_host->fetchSuite(g_host->host, kOfxParameterSuite, 1);
    g_msg = g_host->fetchSuite(g_host->host, kOfxMessageSuite, 1);
    return (g_prop && g_effect && g_param) ? kOfxStatOK : kOfxStatErrMissingHostFeature;
}

static OfxStatus describe(OfxImageEffectHandle effect)
{
    OfxPropertySetHandle p;
    if (g_effect->getPropertySet(effect, &p) != kOfxStatOK)
        return kOfxStatErrFatal;
    g_prop->propSetString(p, kOfxPropLabel, 0, "Video Style Transfer");
    g_prop->propSetString(p, kOfxPropShortLabel, 0, "Style Transfer");
    g_prop->propSetString(p, kOfxPropLongLabel, 0, "Video Style Transfer");
    g_prop->propSetString(p, kOfxPropPluginDescription, 0,
                          "Restyles video after artworks without flicker (clip-wide statistics). "
                          "Runs the vst_engine service (python -m vst_engine serve).");
    g_prop->propSetString(p, kOfxImageEffectPluginPropGrouping, 0, "Stylize");
    g_prop->propSetString(p, kOfxImageEffectPropSupportedContexts, 0, kOfxImageEffectContextFilter);
    g_prop->propSetString(p, kOfxImageEffectPropSupportedContexts, 1, kOfxImageEffectContextGeneral);
    g_prop->propSetString(p, kOfxImageEffectPropSupportedPixelDepths, 0, kOfxBitDepthByte);
    g_prop->propSetString(p, kOfxImageEffectPropSupportedPixelDepths, 1, kOfxBitDepthFloat);
    g_prop->propSetInt(p, kOfxImageEffectPluginPropSingleInstance, 0, 0);
    /* Each render opens its own connection; shared instance state is behind mutexes. */
    g_prop->propSetString(p, kOfxImageEffectPluginRenderThreadSafety, 0, kOfxImageEffectRenderFullySafe);
    g_prop->propSetInt(p, kOfxImageEffectPluginPropHostFrameThreading, 0, 0); /* the network needs whole frames */
    g_prop->propSetInt(p, kOfxImageEffectPropSupportsTiles, 0, 0);
    g_prop->propSetInt(p, kOfxImageEffectPropSupportsMultiResolution, 0, 1);
    g_prop->propSetInt(p, kOfxImageEffectPropSupportsMultipleClipDepths, 0, 0);
    g_prop->propSetInt(p, kOfxImageEffectPropTemporalClipAccess, 0, 1); /* the analysis reads other frames */
    return kOfxStatOK;
}

static OfxPropertySetHandle define_param(OfxParamSetHandle ps, const char *type, const char *name,
                                         const char *label, const char *hint)
{
    OfxPropertySetHandle p = NULL;
    if (g_param->paramDefine(ps, type, name, &p) != kOfxStatOK || !p)
        return NULL;
    g_prop->propSetString(p, kOfxPropLabel, 0, label);
    g_prop->propSetString(p, kOfxParamPropHint, 0, hint);
    g_prop->propSetString(p, kOfxParamPropScriptName, 0, name);
    return p;
}

/* DaVinci Resolve needs both a range and a display range on every numeric parameter. */
static int define_double(OfxParamSetHandle ps, const char *name, const char *label, const char *hint, double def)
{
    OfxPropertySetHandle p = define_param(ps, kOfxParamTypeDouble, name, label, hint);
    if (!p)
        return -1;
    g_prop->propSetDouble(p, kOfxParamPropDefault, 0, def);
    g_prop->propSetDouble(p, kOfxParamPropMin, 0, 0.0);
    g_prop->propSetDouble(p, kOfxParamPropMax, 0, 1.0);
    g_prop->propSetDouble(p, kOfxParamPropDisplayMin, 0, 0.0);
    g_prop->propSetDouble(p, kOfxParamPropDisplayMax, 0, 1.0);
    g_prop->propSetDouble(p, kOfxParamPropIncrement, 0, 0.01);
    g_prop->propSetInt(p, kOfxParamPropDigits, 0, 3);
    g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 1);
    return 0;
}

static int define_bool(OfxParamSetHandle ps, const char *name, const char *label, const char *hint, int def)
{
    OfxPropertySetHandle p = define_param(ps, kOfxParamTypeBoolean, name, label, hint);
    if (!p)
        return -1;
    g_prop->propSetInt(p, kOfxParamPropDefault, 0, def);
    g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0); /* analysis-wide settings: one value per clip */
    return 0;
}

static OfxPropertySetHandle define_string(OfxParamSetHandle ps, const char *name, const char *label,
                                          const char *hint, const char *mode)
{
    OfxPropertySetHandle p = define_param(ps, kOfxParamTypeString, name, label, hint);
    if (!p)
        return NULL;
    g_prop->propSetString(p, kOfxParamPropDefault, 0, "");
    g_prop->propSetString(p, kOfxParamPropStringMode, 0, mode);
    g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0); /* Resolve cannot animate strings */
    return p;
}

static OfxStatus describe_in_context(OfxImageEffectHandle effect, OfxPropertySetHandle in_args)
{
    char *context = NULL;
    g_prop->propGetString(in_args, kOfxImageEffectPropContext, 0, &context);
    if (!streq(context, kOfxImageEffectContextFilter) && !streq(context, kOfxImageEffectContextGeneral))
        return kOfxStatErrUnsupported;

    OfxPropertySetHandle clip;
    if (g_effect->clipDefine(effect, kOfxImageEffectSimpleSourceClipName, &clip) != kOfxStatOK)
        return kOfxStatErrFatal;
    g_prop->propSetString(clip, kOfxImageEffectPropSupportedComponents, 0, kOfxImageComponentRGBA);
    g_prop->propSetInt(clip, kOfxImageEffectPropTemporalClipAccess, 0, 1);
    g_prop->propSetInt(clip, kOfxImageEffectPropSupportsTiles, 0, 0);
    g_prop->propSetInt(clip, kOfxImageClipPropOptional, 0, 0);
    if (g_effect->clipDefine(effect, kOfxImageEffectOutputClipName, &clip) != kOfxStatOK)
        return kOfxStatErrFatal;
    g_prop->propSetString(clip, kOfxImageEffectPropSupportedComponents, 0, kOfxImageComponentRGBA);
    g_prop->propSetInt(clip, kOfxImageEffectPropSupportsTiles, 0, 0);

    OfxParamSetHandle ps;
    if (g_effect->getParamSet(effect, &ps) != kOfxStatOK)
        return kOfxStatErrFatal;
    int bad = 0;
    for (int i = 1; i <= MAX_STYLES; i++) {
        char name[32], label[64];
        fmt(name, sizeof name, "style%d", i);
        fmt(label, sizeof label, "Style %d image", i);
        OfxPropertySetHandle p = define_string(ps, name, label, "An artwork image (PNG, JPEG...) to take the style "
                                               "from. Empty slots are ignored.", kOfxParamStringIsFilePath);
        if (p)
            g_prop->propSetInt(p, kOfxParamPropStringFilePathExists, 0, 1);
        fmt(name, sizeof name, "weight%d", i);
        fmt(label, sizeof label, "Style %d weight", i);
        bad |= !p || define_double(ps, name, label, "How much of this style to use (weights are normalised; "
                                   "animate them to cross-fade styles).", 1.0);
    }
    bad |= define_double(ps, P_STRENGTH, "Strength", "0 keeps the clip, 1 applies the full style.", 1.0);
    bad |= define_bool(ps, P_PRESERVE, "Preserve colours", "Keep the clip's own colours (luminance transfer).", 0);
    bad |= define_bool(ps, P_CONSISTENCY, "Consistency",
                       "Share clip-wide statistics between frames (no flicker). Needs an analysis of the clip: "
                       "press Analyze clip, or the first render analyses it.", 1);
    bad |= define_bool(ps, P_DEFLICKER, "Deflicker",
                       "Even out a flickering exposure (time-lapses, lights on mains power) while keeping fades, "
                       "cuts and changes of light. With Consistency only; the analysis then reads every frame of "
                       "the clip, not one in 8.", 0);
    bad |= define_bool(ps, P_PER_SHOT, "Per shot",
                       "Find the cuts in the Source clip and share statistics within each shot only: a clip of "
                       "several shots then gets each shot's own look. With Consistency only; the analysis then "
                       "reads every frame of the clip.", 0);

    OfxPropertySetHandle p = define_param(ps, kOfxParamTypeInteger, P_MAX_SIDE, "Processing resolution (max side)",
                                          "Process frames with their longest side scaled to this many pixels "
                                          "(0 = full resolution). Faster, softer.");
    bad |= !p;
    if (p) {
        g_prop->propSetInt(p, kOfxParamPropDefault, 0, 0);
        g_prop->propSetInt(p, kOfxParamPropMin, 0, 0);
        g_prop->propSetInt(p, kOfxParamPropMax, 0, 16384);
        g_prop->propSetInt(p, kOfxParamPropDisplayMin, 0, 0);
        g_prop->propSetInt(p, kOfxParamPropDisplayMax, 0, 4096);
        g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);
    }
    bad |= !define_param(ps, kOfxParamTypePushButton, P_ANALYZE, "Analyze clip",
                         "Compute the clip-wide statistics now and store their id with the project, so every "
                         "render node reuses them (set VST_FEATURES_DIR to a shared folder on render farms).");
    p = define_string(ps, P_STATUS, "Engine status", "What the engine service last reported.", kOfxParamStringIsLabel);
    bad |= !p;
    if (p) { /* informational: saving it or re-rendering when it changes would be wrong */
        g_prop->propSetInt(p, kOfxParamPropEvaluateOnChange, 0, 0);
        g_prop->propSetInt(p, kOfxParamPropPersistant, 0, 0);
        g_prop->propSetInt(p, kOfxParamPropCanUndo, 0, 0);
    }
    p = define_string(ps, P_FEATURES, "Features id", "SHA-256 of the stored clip-wide statistics (set by Analyze clip).",
                      kOfxParamStringIsSingleLine);
    bad |= !p;
    if (p)
        g_prop->propSetInt(p, kOfxParamPropSecret, 0, 1);
    return bad ? kOfxStatErrFatal : kOfxStatOK;
}

static OfxParamHandle param_handle(OfxParamSetHandle ps, const char *name)
{
    OfxParamHandle h = NULL;
    if (g_param->paramGetHandle(ps, name, &h, NULL) != kOfxStatOK)
        return NULL;
    return h;
}

static OfxStatus create_instance(OfxImageEffectHandle effect)
{
    OfxPropertySetHandle props;
    OfxParamSetHandle ps;
    if (g_effect->getPropertySet(effect, &props) != kOfxStatOK || g_effect->getParamSet(effect, &ps) != kOfxStatOK)
        return kOfxStatErrFatal;
    Instance *in = calloc(1, sizeof *in);
    if (!in)
        return kOfxStatErrMemory;
    in->effect = effect;
    g_effect->clipGetHandle(effect, kOfxImageEffectSimpleSourceClipName, &in->src, NULL);
    g_effect->clipGetHandle(effect, kOfxImageEffectOutputClipName, &in->dst, NULL);
    for (int i = 0; i < MAX_STYLES; i++) {
        char name[32];
        fmt(name, sizeof name, "style%d", i + 1);
        in->style[i] = param_handle(ps, name);
        fmt(name, sizeof name, "weight%d", i + 1);
        in->weight[i] = param_handle(ps, name);
    }
    in->strength = param_handle(ps, P_STRENGTH);
    in->preserve = param_handle(ps, P_PRESERVE);
    in->consistency = param_handle(ps, P_CONSISTENCY);
    in->max_side = param_handle(ps, P_MAX_SIDE);
    in->deflicker = param_handle(ps, P_DEFLICKER);
    in->per_shot = param_handle(ps, P_PER_SHOT);
    in->status = param_handle(ps, P_STATUS);
    in->features = param_handle(ps, P_FEATURES);
    pthread_mutex_init(&in->lock, NULL);
    pthread_mutex_init(&in->analysis_lock, NULL);
    if (!in->src || !in->dst || !in->features ||
        g_prop->propSetPointer(props, kOfxPropInstanceData, 0, in) != kOfxStatOK) {
        pthread_mutex_destroy(&in->lock);
        pthread_mutex_destroy(&in->analysis_lock);
        free(in);
        return kOfxStatErrFatal;
    }
    return kOfxStatOK;
}

static OfxStatus destroy_instance(OfxImageEffectHandle effect)
{
    Instance *in = instance_of(effect);
    if (!in)
        return kOfxStatOK;
    OfxPropertySetHandle props;
    if (g_effect->getPropertySet(effect, &props) == kOfxStatOK)
        g_prop->propSetPointer(props, kOfxPropInstanceData, 0, NULL);
    pthread_mutex_destroy(&in->lock);
    pthread_mutex_destroy(&in->analysis_lock);
    free(in);
    return kOfxStatOK;
}

/* Declares the sampled frames while an analysis is still to come, so node-based hosts render
 * them upstream; once the features are known only the current frame is needed. */
static OfxStatus frames_needed(Instance *in, OfxPropertySetHandle in_args, OfxPropertySetHandle out_args)
{
    OfxTime t = 0;
    g_prop->propGetDouble(in_args, kOfxPropTime, 0, &t);
    Settings s;
    read_settings(in, t, &s);
    OfxStatus rc = kOfxStatReplyDefault;
    char err[ERR_LEN];
    int32_t first, last;
    if (!s.consistency || s.features_id[0] || s.n == 0 || !any_weight(&s) || source_range(in, &first, &last, err) < 0)
        goto done;
    uint64_t key = analysis_key(&s, first, last);
    pthread_mutex_lock(&in->lock);
    int known = in->cached_id[0] && in->cached_key == key && (in->cached_own || s.strength >= 1);
    pthread_mutex_unlock(&in->lock);
    if (known)
        goto done;
    int32_t *plan = malloc(VST_MAX_PLAN * sizeof *plan);
    double *ranges = malloc((VST_MAX_PLAN + 1) * 2 * sizeof *ranges);
    vst_conn c;
    uint32_t count = 0;
    /* If the engine cannot be reached the default (this frame) stands; Render reports the error. */
    int ok = plan && ranges && vst_open(&c) == 0 && get_plan(in, &c, first, last, plan, &count) == 0;
    if (plan && ranges)
        vst_close(&c);
    if (ok) {
        ranges[0] = ranges[1] = t;
        for (uint32_t i = 0; i < count; i++)
            ranges[2 + 2 * i] = ranges[3 + 2 * i] = plan[i];
        if (s.deflicker || s.per_shot) { /* the analysis reads every frame */
            count = 1;
            ranges[2] = first;
            ranges[3] = last;
        }
        g_prop->propSetDoubleN(out_args, kOfxImageClipPropFrameRangePrefix kOfxImageEffectSimpleSourceClipName,
                               (int)(2 * (count + 1)), ranges);
        rc = kOfxStatOK;
    }
    free(plan);
    free(ranges);
done:
    free_settings(&s);
    return rc;
}

static OfxStatus render(Instance *in, OfxPropertySetHandle in_args)
{
    OfxTime t = 0;
    int win[4] = {0, 0, 0, 0};
    g_prop->propGetDouble(in_args, kOfxPropTime, 0, &t);
    g_prop->propGetIntN(in_args, kOfxImageEffectPropRenderWindow, 4, win);
    OfxRectI window = {win[0], win[1], win[2], win[3]};

    char err[ERR_LEN] = "";
    Settings s;
    read_settings(in, t, &s);
    OfxPropertySetHandle src_h = NULL, dst_h = NULL;
    View src, dst;
    vst_shm m = {.fd = -1};
    vst_conn c = {.fd = -1};
    OfxStatus rc = kOfxStatFailed;

    int got = fetch_image(in->dst, t, &dst_h, &dst, err);
    if (got <= 0) {
        if (got == 0)
            fmt(err, ERR_LEN, "the host gave no Output image for frame %g", t);
        goto fail;
    }
    got = fetch_image(in->src, t, &src_h, &src, err);
    if (got < 0)
        goto fail;
    if (got == 0 || src.b.x2 <= src.b.x1 || src.b.y2 <= src.b.y1) { /* no input here: black */
        copy_region(&dst, NULL, window);
        rc = kOfxStatOK;
        goto done;
    }
    if (s.n == 0 || !any_weight(&s)) { /* nothing to apply: pass the frame through */
        copy_region(&dst, &src, window);
        rc = kOfxStatOK;
        goto done;
    }
    char id[65] = "";
    if (s.consistency && ensure_features(in, &s, id, err) < 0)
        goto fail;
    if (pack_into_shm(&src, &m, err) < 0)
        goto fail;
    release(&src_h); /* the frame is in shared memory: give the host its image back early */
    if (vst_open(&c) < 0 || vst_stylize(&c, &m, (float)s.strength, s.preserve, s.consistency, s.max_side,
                                        round_frame(t), id, s.n, (const char *const *)s.paths, s.weights) < 0) {
        fmt(err, ERR_LEN, "Video Style Transfer: %s", c.err);
        goto fail;
    }
    if (src.premultiplied) /* alpha passes through: give the result the source's form back */
        scale_by_alpha(&m, 0);
    View result = shm_view(&m, src.b);
    copy_region(&dst, &result, window);
    rc = kOfxStatOK;
    goto done;
fail:
    report(in, err[0] ? err : "Video Style Transfer: render failed");
done:
    vst_close(&c);
    vst_shm_destroy(&m);
    release(&src_h);
    release(&dst_h);
    free_settings(&s);
    return rc;
}

static int is_analysis_input(const char *name)
{
    return (strncmp(name, "style", 5) == 0 && name[5] >= '1' && name[5] <= '8' && !name[6]) ||
           streq(name, P_MAX_SIDE) || streq(name, P_DEFLICKER) || streq(name, P_PER_SHOT);
}

static OfxStatus instance_changed(Instance *in, OfxPropertySetHandle in_args)
{
    char *type = NULL, *name = NULL, *reason = NULL;
    OfxTime t = 0;
    g_prop->propGetString(in_args, kOfxPropType, 0, &type);
    g_prop->propGetString(in_args, kOfxPropName, 0, &name);
    g_prop->propGetString(in_args, kOfxPropChangeReason, 0, &reason);
    g_prop->propGetDouble(in_args, kOfxPropTime, 0, &t);
    if (!streq(type, kOfxTypeParameter) || !name)
        return kOfxStatReplyDefault;

    if (streq(name, P_ANALYZE)) {
        Settings s;
        read_settings(in, t, &s);
        char err[ERR_LEN] = "", id[65] = "", msg[ERR_LEN + 64];
        int32_t first = 0, last = 0;
        uint32_t frames = 0;
        OfxStatus rc = kOfxStatFailed;
        if (s.n == 0) {
            fmt(err, ERR_LEN, "Video Style Transfer: set at least one style image before analysing");
        } else if (source_range(in, &first, &last, err) == 0) {
            pthread_mutex_lock(&in->analysis_lock);
            /* With the own colours: the stored analysis then serves any strength keyed later. */
            uint32_t flags = (s.deflicker ? VST_DEFLICKER : 0) | (s.per_shot ? VST_PER_SHOT : 0);
            if (analyze_clip(in, &s, first, last, 0, flags, "", id, &frames, err) == 0) {
                pthread_mutex_lock(&in->lock);
                memcpy(in->cached_id, id, 65);
                in->cached_key = analysis_key(&s, first, last);
                in->cached_own = 1;
                in->last_error[0] = '\0';
                pthread_mutex_unlock(&in->lock);
                rc = kOfxStatOK;
            }
            pthread_mutex_unlock(&in->analysis_lock);
        }
        if (rc == kOfxStatOK) {
            g_param->paramSetValue(in->features, id); /* saved with the project for render nodes */
            fmt(msg, sizeof msg, "Analysed %u frames (%d-%d); features %.12s", (unsigned)frames, first, last, id);
            set_status(in, msg);
        } else {
            report(in, err);
            fmt(msg, sizeof msg, "Error: %s", err);
            set_status(in, msg);
        }
        free_settings(&s);
        return rc;
    }
    if (is_analysis_input(name) && !streq(reason, kOfxChangePluginEdited) && !streq(reason, kOfxChangeTime)) {
        /* The stored statistics no longer match the styles or processing size. */
        char *old = get_string(in->features, t);
        if (old)
            g_param->paramSetValue(in->features, "");
        free(old);
        set_status(in, "Not analysed: press Analyze clip (or let the first render analyse)");
        return kOfxStatOK;
    }
    pthread_mutex_lock(&in->lock);
    char last_error[ERR_LEN];
    memcpy(last_error, in->last_error, sizeof last_error);
    in->last_error[0] = '\0';
    pthread_mutex_unlock(&in->lock);
    if (last_error[0]) { /* renders cannot set params: show their last error now */
        char msg[ERR_LEN + 16];
        fmt(msg, sizeof msg, "Error: %s", last_error);
        set_status(in, msg);
    }
    return kOfxStatReplyDefault;
}

static OfxStatus purge_caches(Instance *in)
{
    pthread_mutex_lock(&in->lock);
    in->plan_count = 0;
    pthread_mutex_unlock(&in->lock);
    return kOfxStatOK;
}

static OfxStatus main_entry(const char *action, const void *handle, OfxPropertySetHandle in_args,
                            OfxPropertySetHandle out_args)
{
    if (!action)
        return kOfxStatErrUnknown;
    if (streq(action, kOfxActionLoad))
        return on_load();
    if (!g_prop || !g_effect || !g_param)
        return kOfxStatErrMissingHostFeature; /* Load failed or was skipped */
    if (streq(action, kOfxActionUnload))
        return kOfxStatOK;
    if (streq(action, kOfxActionDescribe))
        return describe((OfxImageEffectHandle)handle);
    if (streq(action, kOfxImageEffectActionDescribeInContext))
        return describe_in_context((OfxImageEffectHandle)handle, in_args);
    if (streq(action, kOfxActionCreateInstance))
        return create_instance((OfxImageEffectHandle)handle);
    if (streq(action, kOfxActionDestroyInstance))
        return destroy_instance((OfxImageEffectHandle)handle);

    Instance *in = instance_of(handle);
    if (!in)
        return kOfxStatReplyDefault;
    if (streq(action, kOfxImageEffectActionRender))
        return render(in, in_args);
    if (streq(action, kOfxImageEffectActionGetFramesNeeded))
        return frames_needed(in, in_args, out_args);
    if (streq(action, kOfxActionInstanceChanged))
        return instance_changed(in, in_args);
    if (streq(action, kOfxActionPurgeCaches))
        return purge_caches(in);
    if (streq(action, kOfxImageEffectActionBeginSequenceRender) ||
        streq(action, kOfxImageEffectActionEndSequenceRender))
        return kOfxStatOK;
    return kOfxStatReplyDefault;
}

static void set_host(OfxHost *host) { g_host = host; }

static OfxPlugin g_plugin = {
    kOfxImageEffectPluginApi, kOfxImageEffectPluginApiVersion, PLUGIN_ID, 1, 0, set_host, main_entry,
};

OfxExport int OfxGetNumberOfPlugins(void) { return 1; }

OfxExport OfxPlugin *OfxGetPlugin(int nth) { return nth == 0 ? &g_plugin : NULL; }
