/* Engine service client: framing, shared memory, and starting the service when it is not running.
 *
 * Everything here must fail cleanly: a missing engine, a crash or a hang becomes an error
 * message and a -1, never a signal or an endless wait inside the host.
 */
#define _GNU_SOURCE
#include "service_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x31545356u
#define VERSION 3
#define HEADER_SIZE 16
#define MAX_PAYLOAD 65536
#define MAX_STR 4096

enum { HELLO = 1, SAMPLE_PLAN, ANALYZE_BEGIN, ANALYZE_FRAME, ANALYZE_END, STYLIZE, PING };
#define REPLY 0x80
#define ERROR_REPLY 0xFF

/* One service start at a time in this process: concurrent renders must not race to spawn. */
static pthread_mutex_t g_spawn_lock = PTHREAD_MUTEX_INITIALIZER;

static void set_err(vst_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(vst_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
}

static double env_seconds(const char *name, double fallback)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return fallback;
    char *end;
    double d = strtod(v, &end);
    return (end != v && d > 0 && d < 1e7) ? d : fallback;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int vst_socket_path(char *out, size_t len)
{
    const char *env = getenv("VST_SERVICE_SOCKET");
    const char *run = getenv("XDG_RUNTIME_DIR");
    int n;
    if (env && *env)
        n = snprintf(out, len, "%s", env);
    else if (run && *run)
        n = snprintf(out, len, "%s/vst-engine/engine.sock", run);
    else
        n = snprintf(out, len, "/tmp/vst-engine-%u/engine.sock", (unsigned)getuid());
    return (n < 0 || (size_t)n >= len) ? -1 : 0;
}

/* ---- payload encoding (little-endian, bounded) -------------------------------------- */

typedef struct { unsigned char *p; size_t len; int overflow; } wbuf;
typedef struct { const unsigned char *p; size_t len, pos; int bad; } rbuf;

static void w_bytes(wbuf *w, const void *src, size_t n)
{
    if (w->overflow || n > MAX_PAYLOAD - w->len) {
        w->overflow = 1;
        return;
    }
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void w_u32(wbuf *w, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    w_bytes(w, b, 4);
}

static void w_u16(wbuf *w, uint16_t v)
{
    unsigned char b[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    w_bytes(w, b, 2);
}

static void w_u8(wbuf *w, uint8_t v) { w_bytes(w, &v, 1); }
static void w_i32(wbuf *w, int32_t v) { w_u32(w, (uint32_t)v); }

static void w_f32(wbuf *w, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    w_u32(w, u);
}

static void w_str(wbuf *w, const char *s)
{
    size_t n = strlen(s);
    if (n > MAX_STR) {
        w->overflow = 1;
        return;
    }
    w_u32(w, (uint32_t)n);
    w_bytes(w, s, n);
}

static void w_image(wbuf *w, const vst_shm *m)
{
    w_u32(w, m->width);
    w_u32(w, m->height);
    w_u8(w, m->depth);
    w_u8(w, 0);
    w_u8(w, 0);
    w_u8(w, 0);
}

static const unsigned char *r_take(rbuf *r, size_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = 1;
        return NULL;
    }
    const unsigned char *p = r->p + r->pos;
    r->pos += n;
    return p;
}

static uint32_t r_u32(rbuf *r)
{
    const unsigned char *b = r_take(r, 4);
    return b ? (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24 : 0;
}

static uint8_t r_u8(rbuf *r)
{
    const unsigned char *b = r_take(r, 1);
    return b ? b[0] : 0;
}

/* Copies a str into out (truncated to fit, always NUL-terminated). */
static void r_str(rbuf *r, char *out, size_t outlen)
{
    uint32_t n = r_u32(r);
    const unsigned char *s = r->bad ? NULL : r_take(r, n);
    if (outlen == 0)
        return;
    out[0] = '\0';
    if (!s)
        return;
    size_t k = n < outlen - 1 ? n : outlen - 1;
    memcpy(out, s, k);
    out[k] = '\0';
}

/* ---- transport ---------------------------------------------------------------------- */

static void drop(vst_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static int send_all(vst_conn *c, const unsigned char *data, size_t len, int pass_fd)
{
    size_t off = 0;
    while (off < len) {
        struct iovec iov = {.iov_base = (void *)(data + off), .iov_len = len - off};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } ctl;
        if (pass_fd >= 0 && off == 0) { /* the descriptor rides with the header's first byte */
            memset(&ctl, 0, sizeof ctl);
            msg.msg_control = ctl.buf;
            msg.msg_controllen = sizeof ctl.buf;
            struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
        }
#ifdef MSG_NOSIGNAL
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL); /* a dead service must not SIGPIPE the host */
#else
        ssize_t n = sendmsg(c->fd, &msg, 0);
#endif
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                set_err(c, "the engine service did not accept the request within %g s (VST_SERVICE_TIMEOUT)",
                        c->timeout_s);
            else
                set_err(c, "lost the connection to the engine service: %s", strerror(errno));
            drop(c);
            return -1;
        }
        off += (size_t)n;
    }
    return 0;
}

static int recv_all(vst_conn *c, unsigned char *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = recv(c->fd, data + off, len - off, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_err(c, "no answer from the engine service within %g s (VST_SERVICE_TIMEOUT)", c->timeout_s);
            drop(c);
            return -1;
        }
        if (n <= 0) {
            set_err(c, "the engine service closed the connection mid-request (did it crash? see its log)%s%s",
                    n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
            drop(c);
            return -1;
        }
        off += (size_t)n;
    }
    return 0;
}

static void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static const char *type_name(uint16_t type)
{
    static const char *names[] = {"?", "HELLO", "SAMPLE_PLAN", "ANALYZE_BEGIN", "ANALYZE_FRAME",
                                  "ANALYZE_END", "STYLIZE", "PING"};
    return type < sizeof names / sizeof names[0] ? names[type] : "?";
}

/* Request payload area: after the 16-byte header in c->buf. */
static wbuf request(vst_conn *c)
{
    wbuf w = {c->buf + HEADER_SIZE, 0, 0};
    return w;
}

/* Sends the request in w (with pass_fd attached when >= 0) and reads its reply into r. */
static int transact(vst_conn *c, uint16_t type, wbuf *w, int pass_fd, rbuf *r)
{
    c->err_code = 0;
    if (c->fd < 0) {
        set_err(c, "not connected to the engine service");
        return -1;
    }
    if (w->overflow) {
        set_err(c, "%s request too large (a path longer than %d bytes?)", type_name(type), MAX_STR);
        return -1;
    }
    uint32_t id = c->next_id++;
    unsigned char *h = c->buf;
    put_le32(h, MAGIC);
    h[4] = VERSION;
    h[5] = 0;
    h[6] = (unsigned char)type;
    h[7] = (unsigned char)(type >> 8);
    put_le32(h + 8, id);
    put_le32(h + 12, (uint32_t)w->len);
    if (send_all(c, h, HEADER_SIZE + w->len, pass_fd) < 0)
        return -1;

    unsigned char rh[HEADER_SIZE];
    if (recv_all(c, rh, HEADER_SIZE) < 0)
        return -1;
    uint32_t rlen = get_le32(rh + 12);
    uint16_t rtype = (uint16_t)(rh[6] | rh[7] << 8);
    if (get_le32(rh) != MAGIC || (rh[4] | rh[5] << 8) != VERSION || rlen > MAX_PAYLOAD) {
        set_err(c, "the engine service sent a malformed reply (not a vst-engine service?)");
        drop(c);
        return -1;
    }
    /* Replies reuse the request buffer: the request has been sent. */
    if (rlen && recv_all(c, c->buf, rlen) < 0)
        return -1;
    r->p = c->buf;
    r->len = rlen;
    r->pos = 0;
    r->bad = 0;
    if (rtype == ERROR_REPLY) {
        char msg[VST_ERR_LEN - 64];
        uint32_t code = r_u32(r);
        r_str(r, msg, sizeof msg);
        c->err_code = code ? code : 6;
        set_err(c, "engine: %s (error %u)", r->bad ? "malformed error reply" : msg, (unsigned)code);
        return -1;
    }
    if (rtype != (type | REPLY) || get_le32(rh + 8) != id) {
        set_err(c, "unexpected reply 0x%x to %s", (unsigned)rtype, type_name(type));
        drop(c);
        return -1;
    }
    return 0;
}

/* The reply must be consumed exactly, as in the protocol's own rule for payloads. */
static int finish_reply(vst_conn *c, rbuf *r, uint16_t type)
{
    if (r->bad || r->pos != r->len) {
        set_err(c, "malformed %s reply from the engine service", type_name(type));
        drop(c);
        return -1;
    }
    return 0;
}

/* ---- connecting and starting the service -------------------------------------------- */

static int try_connect(const char *path, int *err_out)
{
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path) {
        *err_out = ENAMETOOLONG;
        return -1;
    }
    strcpy(addr.sun_path, path);
#ifdef SOCK_CLOEXEC
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
#else
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd >= 0)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
    if (fd < 0) {
        *err_out = errno;
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        *err_out = errno;
        close(fd);
        return -1;
    }
    return fd;
}

/* Resolves a program name against PATH in the parent, so the child only needs execv. */
static int find_program(const char *name, char *out, size_t len)
{
    if (strchr(name, '/')) {
        snprintf(out, len, "%s", name);
        return access(out, X_OK) == 0 ? 0 : -1;
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t dlen = end ? (size_t)(end - path) : strlen(path);
        int n = snprintf(out, len, "%.*s/%s", (int)dlen, dlen ? path : ".", name);
        if (n > 0 && (size_t)n < len && access(out, X_OK) == 0)
            return 0;
        path += dlen + (end ? 1 : 0);
    }
    return -1;
}

/* Closes inherited descriptors in the child. The raw syscall, not glibc's close_range wrapper,
 * keeps the plugin loadable on glibc 2.27+ (VFX hosts run on Rocky/RHEL 8). */
static void close_from(int first)
{
#if defined(__linux__) && defined(SYS_close_range)
    if (syscall(SYS_close_range, (unsigned)first, ~0u, 0u) == 0)
        return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536)
        max = 65536;
    for (int fd = first; fd < max; fd++)
        close(fd);
}

/* Whether dir is a real folder (not a link) of this user with no group/other access. */
static int private_dir(const char *dir)
{
#if defined(__linux__)
    /* statx (glibc 2.28): lstat is versioned 2.33 in new glibc and would not load on RHEL 8. */
    struct statx sx;
    if (statx(AT_FDCWD, dir, AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_MODE | STATX_UID, &sx) < 0)
        return errno == ENOSYS; /* kernel before 4.11: the service still checks the folder itself */
    return S_ISDIR(sx.stx_mode) && sx.stx_uid == getuid() && !(sx.stx_mode & 077);
#else
    struct stat st;
    return lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid() && !(st.st_mode & 077);
#endif
}

/* Starts `python -m vst_engine serve --socket PATH` in its own session, stdio to a log file.
 * Returns the read end of a status pipe whose write end lives in the service process: it
 * reports an exec failure (an errno) or, by closing, that the service exited. */
static int spawn_service(vst_conn *c, const char *sock_path, char *log_path, size_t log_len)
{
    const char *python = getenv("VST_ENGINE_PYTHON");
    const char *model = getenv("VST_MODEL");
    if (!python || !*python)
        python = "python3";
    char exe[4096];
    if (find_program(python, exe, sizeof exe) < 0) {
        set_err(c, "cannot start the engine service: Python interpreter '%s' not found or not executable "
                   "(set VST_ENGINE_PYTHON to the Python that has vst_engine installed)", python);
        return -1;
    }
    char *argv[9];
    int k = 0;
    argv[k++] = exe;
    argv[k++] = "-m";
    argv[k++] = "vst_engine";
    argv[k++] = "serve";
    argv[k++] = "--socket";
    argv[k++] = (char *)sock_path;
    if (model && *model) {
        argv[k++] = "--model";
        argv[k++] = (char *)model;
    }
    argv[k] = NULL;

    /* The log sits next to the socket, in the service's private folder. Like the service, refuse
     * a folder that is not this user's alone: another user could have planted links in it. */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", sock_path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        mkdir(dir, 0700);
    }
    if (slash && slash != dir && !private_dir(dir)) {
        set_err(c, "cannot start the engine service: %s is not a folder private to this user "
                   "(it must be mode 0700 and owned by you)", dir);
        return -1;
    }
    snprintf(log_path, log_len, "%s.log", sock_path);
    int logfd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    int nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (logfd < 0) {
        snprintf(log_path, log_len, "/dev/null");
        logfd = nullfd >= 0 ? dup(nullfd) : -1;
    }
    int pipefd[2];
    if (nullfd < 0 || logfd < 0 || pipe(pipefd) < 0) {
        set_err(c, "cannot start the engine service: %s", strerror(errno));
        if (nullfd >= 0)
            close(nullfd);
        if (logfd >= 0)
            close(logfd);
        return -1;
    }
    fcntl(pipefd[0], F_SETFD, FD_CLOEXEC);
    fcntl(pipefd[1], F_SETFD, FD_CLOEXEC);

    /* Double fork: the service is reparented to init, so the host never has to reap it.
     * Between fork and exec only async-signal-safe calls (the host may be multithreaded). */
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        pid_t g = fork();
        if (g != 0)
            _exit(g < 0 ? 1 : 0);
        /* Move the descriptors above 10 first so dup2 onto 0..3 cannot clobber one another. */
        int n = fcntl(nullfd, F_DUPFD, 10), l = fcntl(logfd, F_DUPFD, 10), s = fcntl(pipefd[1], F_DUPFD, 10);
        if (n < 0 || l < 0 || s < 0 || dup2(n, 0) < 0 || dup2(l, 1) < 0 || dup2(l, 2) < 0 || dup2(s, 3) < 0)
            _exit(126);
        close_from(4);
        execv(exe, argv);
        int e = errno;
        ssize_t ignored = write(3, &e, sizeof e);
        (void)ignored;
        _exit(127);
    }
    int fork_errno = errno;
    close(pipefd[1]);
    close(nullfd);
    close(logfd);
    if (pid < 0) {
        close(pipefd[0]);
        set_err(c, "cannot start the engine service: fork: %s", strerror(fork_errno));
        return -1;
    }
    int wstatus;
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    return pipefd[0];
}

/* Waits for the freshly started service to listen; fails fast when it could not run or died. */
static int wait_for_service(vst_conn *c, const char *path, int status_fd, const char *log_path)
{
    double limit = env_seconds("VST_SERVICE_START_TIMEOUT", 60.0);
    double deadline = now_s() + limit;
    int exited = 0, e = 0;
    for (;;) {
        int fd = try_connect(path, &e);
        if (fd >= 0) {
            close(status_fd);
            return fd;
        }
        if (exited) { /* it may have lost a race to another service that is now listening */
            close(status_fd);
            set_err(c, "the engine service exited during start-up; see %s", log_path);
            return -1;
        }
        double left = deadline - now_s();
        if (left <= 0) {
            close(status_fd);
            set_err(c, "the engine service did not start listening on %s within %g s "
                       "(VST_SERVICE_START_TIMEOUT); see %s", path, limit, log_path);
            return -1;
        }
        struct pollfd p = {.fd = status_fd, .events = POLLIN};
        int ms = left < 0.2 ? (int)(left * 1000) + 1 : 200;
        if (poll(&p, 1, ms) > 0) {
            int child_errno = 0;
            ssize_t n = read(status_fd, &child_errno, sizeof child_errno);
            if (n == (ssize_t)sizeof child_errno) {
                close(status_fd);
                set_err(c, "cannot run the engine's Python interpreter: %s (VST_ENGINE_PYTHON)",
                        strerror(child_errno));
                return -1;
            }
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
                exited = 1;
        }
    }
}

int vst_open(vst_conn *c)
{
    c->fd = -1;
    c->next_id = 1;
    c->err_code = 0;
    c->err[0] = '\0';
    c->timeout_s = env_seconds("VST_SERVICE_TIMEOUT", 300.0);
    c->buf = malloc(HEADER_SIZE + MAX_PAYLOAD);
    if (!c->buf) {
        set_err(c, "out of memory");
        return -1;
    }
    char path[4096];
    if (vst_socket_path(path, sizeof path) < 0) {
        set_err(c, "engine socket path too long");
        return -1;
    }
    int e = 0;
    int fd = try_connect(path, &e);
    if (fd < 0 && (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR)) {
        pthread_mutex_lock(&g_spawn_lock);
        fd = try_connect(path, &e); /* another thread may have started it meanwhile */
        if (fd < 0 && (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR)) {
            char log_path[4200];
            int status_fd = spawn_service(c, path, log_path, sizeof log_path);
            if (status_fd >= 0)
                fd = wait_for_service(c, path, status_fd, log_path);
            else
                fd = -1;
            pthread_mutex_unlock(&g_spawn_lock);
            if (fd < 0)
                return -1;
        } else {
            pthread_mutex_unlock(&g_spawn_lock);
        }
    }
    if (fd < 0) {
        set_err(c, "cannot connect to the engine service at %s: %s", path, strerror(e));
        return -1;
    }
    struct timeval tv;
    tv.tv_sec = (time_t)c->timeout_s;
    tv.tv_usec = (suseconds_t)((c->timeout_s - (double)tv.tv_sec) * 1e6);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
#ifdef SO_NOSIGPIPE
    int one = 1; /* macOS has no MSG_NOSIGNAL */
    setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    c->fd = fd;
    return 0;
}

void vst_close(vst_conn *c)
{
    drop(c);
    free(c->buf);
    c->buf = NULL;
}

/* ---- shared memory ------------------------------------------------------------------- */

int vst_shm_create(vst_shm *m, uint32_t width, uint32_t height, uint8_t depth, char *err, size_t errlen)
{
    m->fd = -1;
    m->data = NULL;
    m->width = width;
    m->height = height;
    m->depth = depth;
    if (width < 1 || height < 1 || width > 16384 || height > 16384 || (uint64_t)width * height > (1u << 26) ||
        (depth != 1 && depth != 4)) {
        snprintf(err, errlen, "image %ux%u (depth %u) outside what the engine accepts "
                              "(1..16384 pixels a side, at most 2^26 pixels)",
                 (unsigned)width, (unsigned)height, (unsigned)depth);
        return -1;
    }
    m->size = (size_t)width * height * 4u * depth;
#if defined(__linux__)
    /* The service maps the memory only if shrinking is sealed off (a shrink would SIGBUS it). */
    m->fd = memfd_create("vst-frame", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (m->fd >= 0 && (ftruncate(m->fd, (off_t)m->size) < 0 || fcntl(m->fd, F_ADD_SEALS, F_SEAL_SHRINK) < 0)) {
        close(m->fd);
        m->fd = -1;
    }
#else
    /* No memfd: a POSIX shared-memory object, unlinked at once so only the descriptor remains. */
    static unsigned counter;
    for (int tries = 0; m->fd < 0 && tries < 16; tries++) {
        char name[64];
        snprintf(name, sizeof name, "/vst-%d-%u-%ld", (int)getpid(), __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED),
                 (long)(now_s() * 1e6) % 1000000);
        m->fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (m->fd >= 0) {
            shm_unlink(name);
            fcntl(m->fd, F_SETFD, FD_CLOEXEC);
            if (ftruncate(m->fd, (off_t)m->size) < 0) {
                close(m->fd);
                m->fd = -1;
                break;
            }
        } else if (errno != EEXIST) {
            break;
        }
    }
#endif
    if (m->fd < 0) {
        snprintf(err, errlen, "cannot create %zu bytes of shared memory: %s", m->size, strerror(errno));
        return -1;
    }
    void *p = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "cannot map %zu bytes of shared memory: %s", m->size, strerror(errno));
        close(m->fd);
        m->fd = -1;
        return -1;
    }
    m->data = p;
    return 0;
}

void vst_shm_destroy(vst_shm *m)
{
    if (m->data)
        munmap(m->data, m->size);
    if (m->fd >= 0)
        close(m->fd);
    m->data = NULL;
    m->fd = -1;
}

/* ---- requests ------------------------------------------------------------------------ */

int vst_hello(vst_conn *c, const char *client, char *version, size_t vlen, char *model, size_t mlen,
              char *device, size_t dlen, int *trained)
{
    wbuf w = request(c);
    rbuf r;
    w_str(&w, client);
    if (transact(c, HELLO, &w, -1, &r) < 0)
        return -1;
    r_str(&r, version, vlen);
    r_str(&r, model, mlen);
    r_str(&r, device, dlen);
    *trained = r_u8(&r);
    return finish_reply(c, &r, HELLO);
}

int vst_sample_plan(vst_conn *c, int32_t first, int32_t last, uint32_t interval, int32_t *frames,
                    uint32_t max_frames, uint32_t *count)
{
    wbuf w = request(c);
    rbuf r;
    w_i32(&w, first);
    w_i32(&w, last);
    w_u32(&w, interval);
    if (transact(c, SAMPLE_PLAN, &w, -1, &r) < 0)
        return -1;
    uint32_t n = r_u32(&r);
    if (n > max_frames) {
        set_err(c, "the engine's sample plan has %u frames, more than %u", (unsigned)n, (unsigned)max_frames);
        drop(c);
        return -1;
    }
    for (uint32_t i = 0; i < n; i++)
        frames[i] = (int32_t)r_u32(&r);
    *count = n;
    return finish_reply(c, &r, SAMPLE_PLAN);
}

int vst_analyze_begin(vst_conn *c, int32_t first, int32_t last, uint32_t interval, uint32_t max_side,
                      uint32_t n, const char *const *paths, const char *label, uint32_t flags, const char *base,
                      uint32_t *session)
{
    wbuf w = request(c);
    rbuf r;
    w_i32(&w, first);
    w_i32(&w, last);
    w_u32(&w, interval);
    w_u32(&w, max_side);
    w_u32(&w, n);
    for (uint32_t i = 0; i < n; i++)
        w_str(&w, paths[i]);
    w_str(&w, label);
    w_u32(&w, flags);
    w_str(&w, base);
    if (transact(c, ANALYZE_BEGIN, &w, -1, &r) < 0)
        return -1;
    *session = r_u32(&r);
    return finish_reply(c, &r, ANALYZE_BEGIN);
}

int vst_analyze_frame(vst_conn *c, uint32_t session, int32_t frame, const vst_shm *image)
{
    wbuf w = request(c);
    rbuf r;
    w_u32(&w, session);
    w_i32(&w, frame);
    w_image(&w, image);
    if (transact(c, ANALYZE_FRAME, &w, image->fd, &r) < 0)
        return -1;
    return finish_reply(c, &r, ANALYZE_FRAME);
}

static int is_features_id(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return i == 64;
}

int vst_analyze_end(vst_conn *c, uint32_t session, char features_id[65])
{
    wbuf w = request(c);
    rbuf r;
    w_u32(&w, session);
    if (transact(c, ANALYZE_END, &w, -1, &r) < 0)
        return -1;
    char id[128];
    r_str(&r, id, sizeof id);
    if (finish_reply(c, &r, ANALYZE_END) < 0)
        return -1;
    if (!is_features_id(id)) {
        set_err(c, "the engine returned an invalid features id");
        return -1;
    }
    memcpy(features_id, id, 65);
    return 0;
}

int vst_stylize(vst_conn *c, const vst_shm *image, float strength, int preserve_colours, int consistency,
                uint32_t max_side, int32_t frame, const char *features_id, uint32_t n, const char *const *paths,
                const float *weights)
{
    wbuf w = request(c);
    rbuf r;
    w_image(&w, image);
    w_f32(&w, strength);
    w_u8(&w, preserve_colours ? 1 : 0);
    w_u8(&w, consistency ? 1 : 0);
    w_u16(&w, 0);
    w_u32(&w, max_side);
    w_i32(&w, frame);
    w_str(&w, features_id);
    w_u32(&w, n);
    for (uint32_t i = 0; i < n; i++) {
        w_str(&w, paths[i]);
        w_f32(&w, weights[i]);
    }
    if (transact(c, STYLIZE, &w, image->fd, &r) < 0)
        return -1;
    return finish_reply(c, &r, STYLIZE);
}
