/* Variadic OpenFX suite functions for the Python test host.
 *
 * ctypes callbacks cannot be variadic, so the parameter suite's get/set functions and the
 * message suite's message() live here: they read the variadic arguments by the parameter's
 * kind and forward to fixed-signature callbacks that the Python host registers.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

typedef int OfxStatus;
#define STAT_FAILED 1
#define STAT_UNSUPPORTED 5

/* Parameter kinds reported by the host: how the variadic value is passed. */
enum { KIND_OTHER = 0, KIND_DOUBLE = 1, KIND_INT = 2, KIND_STRING = 3 };

typedef int (*kind_fn)(void *param);
typedef OfxStatus (*get_double_fn)(void *param, int at_time, double time, double *out);
typedef OfxStatus (*get_int_fn)(void *param, int at_time, double time, int *out);
typedef OfxStatus (*get_string_fn)(void *param, int at_time, double time, char **out);
typedef OfxStatus (*set_double_fn)(void *param, int at_time, double time, double value);
typedef OfxStatus (*set_int_fn)(void *param, int at_time, double time, int value);
typedef OfxStatus (*set_string_fn)(void *param, int at_time, double time, const char *value);
typedef OfxStatus (*message_fn)(void *handle, const char *type, const char *id, const char *text);

static struct {
    kind_fn kind;
    get_double_fn get_double;
    get_int_fn get_int;
    get_string_fn get_string;
    set_double_fn set_double;
    set_int_fn set_int;
    set_string_fn set_string;
    message_fn message;
} cb;

void shim_register(kind_fn kind, get_double_fn gd, get_int_fn gi, get_string_fn gs, set_double_fn sd,
                   set_int_fn si, set_string_fn ss, message_fn msg)
{
    cb.kind = kind;
    cb.get_double = gd;
    cb.get_int = gi;
    cb.get_string = gs;
    cb.set_double = sd;
    cb.set_int = si;
    cb.set_string = ss;
    cb.message = msg;
}

static OfxStatus get_value(void *param, int at_time, double time, va_list ap)
{
    switch (cb.kind(param)) {
    case KIND_DOUBLE: return cb.get_double(param, at_time, time, va_arg(ap, double *));
    case KIND_INT: return cb.get_int(param, at_time, time, va_arg(ap, int *));
    case KIND_STRING: return cb.get_string(param, at_time, time, va_arg(ap, char **));
    default: return STAT_UNSUPPORTED;
    }
}

static OfxStatus set_value(void *param, int at_time, double time, va_list ap)
{
    switch (cb.kind(param)) {
    case KIND_DOUBLE: return cb.set_double(param, at_time, time, va_arg(ap, double));
    case KIND_INT: return cb.set_int(param, at_time, time, va_arg(ap, int));
    case KIND_STRING: return cb.set_string(param, at_time, time, va_arg(ap, const char *));
    default: return STAT_UNSUPPORTED;
    }
}

OfxStatus shim_paramGetValue(void *param, ...)
{
    va_list ap;
    va_start(ap, param);
    OfxStatus st = get_value(param, 0, 0.0, ap);
    va_end(ap);
    return st;
}

OfxStatus shim_paramGetValueAtTime(void *param, double time, ...)
{
    va_list ap;
    va_start(ap, time);
    OfxStatus st = get_value(param, 1, time, ap);
    va_end(ap);
    return st;
}

OfxStatus shim_paramSetValue(void *param, ...)
{
    va_list ap;
    va_start(ap, param);
    OfxStatus st = set_value(param, 0, 0.0, ap);
    va_end(ap);
    return st;
}

OfxStatus shim_paramSetValueAtTime(void *param, double time, ...)
{
    va_list ap;
    va_start(ap, time);
    OfxStatus st = set_value(param, 1, time, ap);
    va_end(ap);
    return st;
}

OfxStatus shim_paramGetDerivative(void *param, double time, ...)
{
    (void)param;
    (void)time;
    return STAT_UNSUPPORTED;
}

OfxStatus shim_paramGetIntegral(void *param, double time1, double time2, ...)
{
    (void)param;
    (void)time1;
    (void)time2;
    return STAT_UNSUPPORTED;
}

OfxStatus shim_message(void *handle, const char *type, const char *id, const char *format, ...)
{
    va_list ap, copy;
    va_start(ap, format);
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, format, copy);
    va_end(copy);
    char *text = n >= 0 ? malloc((size_t)n + 1) : NULL;
    OfxStatus st = STAT_FAILED;
    if (text) {
        vsnprintf(text, (size_t)n + 1, format, ap);
        st = cb.message(handle, type, id, text);
        free(text);
    }
    va_end(ap);
    return st;
}
