/* One online request's raw values, read out of its dicts in one pass (see FeatureMap.encode_records):
 *
 *   out[f, r] = records[r][names[f]] as a double (NaN for None, a missing key, or a value that is
 *               not a number), and seen[f] |= the kinds of value met in feature f's column:
 */
#define SEEN_INT 1    /* an int within ±2^53 (exact as a double) */
#define SEEN_FLOAT 2  /* a float */
#define SEEN_NONE 4   /* None, or the key is absent */
#define SEEN_BOOL 8   /* True or False (read as 1.0 and 0.0) */
#define SEEN_BIG 16   /* an int past ±2^53 (rounded) */
#define SEEN_OTHER 32 /* anything else: text, lists, ... (NaN) */
/*
 * records: a list of dicts; names: a tuple of str; out: double [F, n]; seen: int32 [F].
 * Returns 0, or -1 when records is not a list of dicts or names not a tuple (nothing is read).
 * Called through ctypes.PyDLL: the GIL is held throughout, and no reference is kept.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#define EXACT (1LL << 53)

static double number(PyObject *value, int32_t *seen) {
    if (value == NULL || value == Py_None) {
        *seen |= SEEN_NONE;
        return NAN;
    }
    if (PyFloat_Check(value)) { /* numpy's float64 too */
        *seen |= SEEN_FLOAT;
        return PyFloat_AS_DOUBLE(value);
    }
    if (PyBool_Check(value)) {
        *seen |= SEEN_BOOL;
        return value == Py_True ? 1.0 : 0.0;
    }
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow == 0 && v >= -EXACT && v <= EXACT) {
            *seen |= SEEN_INT;
            return (double)v;
        }
        *seen |= SEEN_BIG;
        double rounded = PyLong_AsDouble(value);
        if (rounded == -1.0 && PyErr_Occurred()) { /* past the double range: ±inf, which encoders reject */
            PyErr_Clear();
            rounded = overflow < 0 ? -INFINITY : INFINITY;
        }
        return rounded;
    }
    *seen |= SEEN_OTHER;
    return NAN;
}

int snn_records_to_numbers(PyObject *records, PyObject *names, double *out, int32_t *seen) {
    if (!PyList_CheckExact(records) || !PyTuple_CheckExact(names)) return -1;
    const Py_ssize_t n = PyList_GET_SIZE(records), fields = PyTuple_GET_SIZE(names);
    for (Py_ssize_t r = 0; r < n; ++r)
        if (!PyDict_Check(PyList_GET_ITEM(records, r))) return -1;
    for (Py_ssize_t f = 0; f < fields; ++f) seen[f] = 0;
    for (Py_ssize_t r = 0; r < n; ++r) {
        PyObject *record = PyList_GET_ITEM(records, r);
        for (Py_ssize_t f = 0; f < fields; ++f) {
            PyObject *value = PyDict_GetItemWithError(record, PyTuple_GET_ITEM(names, f)); /* borrowed */
            if (value == NULL && PyErr_Occurred()) PyErr_Clear(); /* an unhashable key cannot happen: str */
            out[f * n + r] = number(value, &seen[f]);
        }
    }
    return 0;
}
