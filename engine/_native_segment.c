/* engine._native_segment: segment_text with the default GSM tables, in C. Pure: no I/O.
 *
 * segment_text runs once per accepted message. With the default tables its work is two
 * passes over the code points: one chooses GSM-7 or UCS-2 and counts units, one finds where
 * each part ends. Done in Python it costs several C calls per part: the best Python version
 * was 9x smsutil.split on a 200-character text with emoji (bench/segment.py), against a
 * target of 20x. Here it is one call per text.
 *
 * The rules are engine/segment.py's, stated there and in `_segment_general`, the plain
 * Python statement of them that the tests hold this module to:
 * - a character weighs 1 or 2 septets in GSM-7 (an extension character is 0x1B and its
 *   code, TS 23.038 6.2.1.1) and 1 or 2 UTF-16 units in UCS-2 (outside the BMP: a surrogate
 *   pair); a text is GSM-7 when the default tables hold every character;
 * - a part takes every character that fits (greedy: the fewest parts); an escape pair or a
 *   surrogate pair is one code point here, so no part ends inside one;
 * - with grapheme cuts a part never ends between CR and LF (UAX #29 GB3), the only cluster
 *   of more than one character a default-alphabet text can hold. In UCS-2 a cut is taken
 *   at once when the character after it always starts a cluster and the one before never
 *   joins what follows; otherwise `cluster_edge`, segment.py's regex search for UAX #29
 *   clusters, says where the part ends.
 *
 * Every table and constant comes from segment.py through `configure`, so each lives in one
 * place.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define BMP_SIZE 0x10000
#define MAX_RANGES 32
#define MAX_JOINERS 64
#define MAX_PARTS 255 /* TS 23.040 9.2.3.24.1: the part count is one octet */

/* Set once by configure(). Septets per BMP character with the default tables, 0 when
 * neither table holds it. */
static unsigned char gsm_septets[BMP_SIZE];
static Py_UCS4 starter_low[MAX_RANGES], starter_high[MAX_RANGES];
static int starter_count;
static Py_UCS4 joiners[MAX_JOINERS];
static int joiner_count;
/* Units per part: single part, multi-part with an 8-bit and a 16-bit reference. */
static Py_ssize_t gsm_single, gsm_multi_8, gsm_multi_16;
static Py_ssize_t ucs2_single, ucs2_multi_8, ucs2_multi_16;
static PyObject *segmentation_type, *cluster_edge, *gsm_name, *ucs2_name;

static int
fill_septets(PyObject *characters, unsigned char septets)
{
    if (!PyUnicode_Check(characters)) {
        PyErr_SetString(PyExc_TypeError, "configure: a character table must be a str");
        return -1;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(characters);
    for (Py_ssize_t i = 0; i < length; i++) {
        Py_UCS4 code = PyUnicode_READ_CHAR(characters, i);
        if (code >= BMP_SIZE) {
            PyErr_SetString(PyExc_ValueError, "configure: a GSM character outside the BMP");
            return -1;
        }
        gsm_septets[code] = septets;
    }
    return 0;
}

static int
set_ranges(PyObject *ranges)
{
    PyObject *sequence = PySequence_Fast(ranges, "configure: starter ranges must be a sequence");
    if (sequence == NULL) {
        return -1;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    if (count > MAX_RANGES) {
        Py_DECREF(sequence);
        PyErr_SetString(PyExc_ValueError, "configure: too many starter ranges");
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        unsigned int low, high;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(sequence, i), "II", &low, &high)) {
            Py_DECREF(sequence);
            return -1;
        }
        starter_low[i] = low;
        starter_high[i] = high;
    }
    Py_DECREF(sequence);
    starter_count = (int)count;
    return 0;
}

static void
replace(PyObject **slot, PyObject *value)
{
    Py_XINCREF(value);
    Py_XSETREF(*slot, value);
}

PyDoc_STRVAR(configure_doc,
    "configure(default_characters, extension_characters, capacities, starter_ranges,\n"
    "          joins_following, segmentation_type, cluster_edge)\n\n"
    "Set what split_default_tables uses. capacities: (GSM-7 single, 8-bit, 16-bit,\n"
    "UCS-2 single, 8-bit, 16-bit) units per part.");

static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "configure takes 7 arguments");
        return NULL;
    }
    replace(&segmentation_type, NULL); /* not usable until every table is set */
    memset(gsm_septets, 0, sizeof gsm_septets);
    if (fill_septets(args[0], 1) < 0 || fill_septets(args[1], 2) < 0) {
        return NULL;
    }
    if (!PyArg_ParseTuple(args[2], "nnnnnn", &gsm_single, &gsm_multi_8, &gsm_multi_16,
                          &ucs2_single, &ucs2_multi_8, &ucs2_multi_16)) {
        return NULL;
    }
    if (gsm_multi_16 < 2 || ucs2_multi_16 < 2 || gsm_multi_8 < 2 || ucs2_multi_8 < 2) {
        /* A part must hold a two-unit character, or a split could not advance. */
        PyErr_SetString(PyExc_ValueError, "configure: a part must hold 2 units or more");
        return NULL;
    }
    if (set_ranges(args[3]) < 0) {
        return NULL;
    }
    PyObject *joins = args[4];
    if (!PyUnicode_Check(joins) || PyUnicode_GET_LENGTH(joins) > MAX_JOINERS) {
        PyErr_SetString(PyExc_ValueError, "configure: joins_following must be a short str");
        return NULL;
    }
    joiner_count = (int)PyUnicode_GET_LENGTH(joins);
    for (int i = 0; i < joiner_count; i++) {
        joiners[i] = PyUnicode_READ_CHAR(joins, i);
    }
    if (!PyCallable_Check(args[5]) || !PyCallable_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "configure: segmentation_type and cluster_edge are called");
        return NULL;
    }
    if (gsm_name == NULL) {
        gsm_name = PyUnicode_InternFromString("GSM-7");
        ucs2_name = PyUnicode_InternFromString("UCS-2");
        if (gsm_name == NULL || ucs2_name == NULL) {
            return NULL;
        }
    }
    replace(&cluster_edge, args[6]);
    replace(&segmentation_type, args[5]);
    Py_RETURN_NONE;
}

static int
starts_cluster(Py_UCS4 code)
{
    for (int i = 0; i < starter_count; i++) {
        if (code >= starter_low[i] && code <= starter_high[i]) {
            return 1;
        }
    }
    return 0;
}

static int
joins_following(Py_UCS4 code)
{
    for (int i = 0; i < joiner_count; i++) {
        if (code == joiners[i]) {
            return 1;
        }
    }
    return 0;
}

typedef struct {
    int gsm;             /* every character is in the default tables */
    Py_ssize_t units;    /* septets (GSM-7) or UTF-16 code units (UCS-2) */
    Py_ssize_t doubles;  /* characters of two units */
} Count;

/* Returns -1 on a lone surrogate, which is not a character and can't be encoded. Written
 * for one string kind at a time (the callers pass a constant), so each loop reads its
 * code units directly. */
static inline Py_ALWAYS_INLINE int
count_units(int kind, const void *data, Py_ssize_t length, Count *count)
{
    Py_ssize_t extension = 0, i = 0;
    for (; i < length; i++) {
        Py_UCS4 code = PyUnicode_READ(kind, data, i);
        if (code >= BMP_SIZE || gsm_septets[code] == 0) {
            break;
        }
        extension += gsm_septets[code] - 1;
    }
    if (i == length) {
        *count = (Count){1, length + extension, extension};
        return 0;
    }
    Py_ssize_t pairs = 0;
    if (kind != PyUnicode_1BYTE_KIND) { /* a latin-1 string holds no surrogate */
        for (; i < length; i++) {
            Py_UCS4 code = PyUnicode_READ(kind, data, i);
            if (code >= BMP_SIZE) {
                pairs++;
            }
            else if (code >= 0xD800 && code <= 0xDFFF) {
                return -1;
            }
        }
    }
    *count = (Count){0, length + pairs, pairs};
    return 0;
}

/* Where the part that starts at `start` ends: every character that fits, then the cut
 * rules. Returns -1 with an exception set if cluster_edge fails. */
static inline Py_ALWAYS_INLINE Py_ssize_t
part_end(int kind, const void *data, Py_ssize_t length, PyObject *text, const Count *count,
         Py_ssize_t per_part, int grapheme, Py_ssize_t start)
{
    Py_ssize_t end;
    if (count->doubles == 0) {
        end = start + per_part;
    }
    else {
        Py_ssize_t used = 0;
        for (end = start; end < length; end++) {
            Py_UCS4 code = PyUnicode_READ(kind, data, end);
            Py_ssize_t weight = count->gsm ? gsm_septets[code] : (code >= BMP_SIZE ? 2 : 1);
            if (used + weight > per_part) {
                break;
            }
            used += weight;
        }
    }
    if (end >= length || !grapheme) {
        return end;
    }
    Py_UCS4 before = PyUnicode_READ(kind, data, end - 1);
    Py_UCS4 after = PyUnicode_READ(kind, data, end);
    if (before == '\r' && after == '\n') {
        return end - 1 > start ? end - 1 : end;
    }
    if (count->gsm || (starts_cluster(after) && !joins_following(before))) {
        return end;
    }
    PyObject *search = Py_NewRef(cluster_edge); /* held: the call runs Python code */
    PyObject *edge = PyObject_CallFunction(search, "Onn", text, start, end);
    Py_DECREF(search);
    if (edge == NULL) {
        return -1;
    }
    Py_ssize_t cut = PyLong_AsSsize_t(edge);
    Py_DECREF(edge);
    if (cut == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (cut <= start || cut > end) {
        PyErr_Format(PyExc_ValueError, "cluster_edge gave %zd, outside (%zd, %zd]", cut, start,
                     end);
        return -1;
    }
    return cut;
}

/* The parts, or NULL with an exception set. */
static inline Py_ALWAYS_INLINE PyObject *
split_parts(int kind, const void *data, Py_ssize_t length, PyObject *text, const Count *count,
            Py_ssize_t per_part, int grapheme)
{
    PyObject *parts = PyList_New(0);
    if (parts == NULL) {
        return NULL;
    }
    Py_ssize_t start = 0;
    while (start < length) {
        Py_ssize_t end = part_end(kind, data, length, text, count, per_part, grapheme, start);
        if (end < 0) {
            Py_DECREF(parts);
            return NULL;
        }
        if (end > length) {
            end = length;
        }
        PyObject *part = PyUnicode_Substring(text, start, end);
        if (part == NULL || PyList_Append(parts, part) < 0) {
            Py_XDECREF(part);
            Py_DECREF(parts);
            return NULL;
        }
        Py_DECREF(part);
        start = end;
    }
    return parts;
}

/* TS 23.040 9.2.3.24.1 (UDHL 5, IEI 0x00, length 3, 8-bit reference) and 9.2.3.24.8
 * (UDHL 6, IEI 0x08, length 4, 16-bit reference), then the part count and the part's
 * number. Empty when there are too many parts for the octet (segment_text raises). */
static PyObject *
concatenation_headers(int concat_ref, unsigned int reference, Py_ssize_t total)
{
    PyObject *headers = PyList_New(total > MAX_PARTS ? 0 : total);
    if (headers == NULL || total > MAX_PARTS) {
        return headers;
    }
    unsigned char header[7];
    Py_ssize_t size;
    if (concat_ref == 8) {
        header[0] = 5, header[1] = 0x00, header[2] = 3, header[3] = reference & 0xFF;
        size = 6;
    }
    else {
        header[0] = 6, header[1] = 0x08, header[2] = 4;
        header[3] = (reference >> 8) & 0xFF, header[4] = reference & 0xFF;
        size = 7;
    }
    header[size - 2] = (unsigned char)total;
    for (Py_ssize_t sequence = 1; sequence <= total; sequence++) {
        header[size - 1] = (unsigned char)sequence;
        PyObject *octets = PyBytes_FromStringAndSize((const char *)header, size);
        if (octets == NULL) {
            Py_DECREF(headers);
            return NULL;
        }
        PyList_SET_ITEM(headers, sequence - 1, octets);
    }
    return headers;
}

static inline Py_ALWAYS_INLINE PyObject *
segment_kind(int kind, PyObject *text, int concat_ref, unsigned int reference, int grapheme,
             PyObject *smart_replaced)
{
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    Count count;
    if (count_units(kind, data, length, &count) < 0) {
        Py_RETURN_NONE;
    }
    PyObject *parts, *headers;
    Py_ssize_t per_part = count.gsm ? gsm_single : ucs2_single;
    if (count.units <= per_part) {
        parts = PyList_New(1);
        headers = PyList_New(1);
        PyObject *no_header = PyBytes_FromStringAndSize(NULL, 0);
        if (parts == NULL || headers == NULL || no_header == NULL) {
            Py_XDECREF(parts);
            Py_XDECREF(headers);
            Py_XDECREF(no_header);
            return NULL;
        }
        PyList_SET_ITEM(parts, 0, Py_NewRef(text));
        PyList_SET_ITEM(headers, 0, no_header);
    }
    else {
        if (count.gsm) {
            per_part = concat_ref == 8 ? gsm_multi_8 : gsm_multi_16;
        }
        else {
            per_part = concat_ref == 8 ? ucs2_multi_8 : ucs2_multi_16;
        }
        parts = split_parts(kind, data, length, text, &count, per_part, grapheme);
        if (parts == NULL) {
            return NULL;
        }
        headers = concatenation_headers(concat_ref, reference, PyList_GET_SIZE(parts));
        if (headers == NULL) {
            Py_DECREF(parts);
            return NULL;
        }
    }
    PyObject *total = PyLong_FromSsize_t(PyList_GET_SIZE(parts));
    PyObject *units = PyLong_FromSsize_t(count.units);
    PyObject *capacity = PyLong_FromSsize_t(per_part);
    PyObject *result = NULL;
    if (total != NULL && units != NULL && capacity != NULL) {
        /* Segmentation(encoding, segments, units, per_segment, parts, smart_replaced,
         *              national, udh) */
        PyObject *fields[] = {count.gsm ? gsm_name : ucs2_name, total, units, capacity, parts,
                              smart_replaced, Py_None, headers};
        result = PyObject_Vectorcall(segmentation_type, fields, 8, NULL);
    }
    Py_XDECREF(total);
    Py_XDECREF(units);
    Py_XDECREF(capacity);
    Py_DECREF(parts);
    Py_DECREF(headers);
    return result;
}

PyDoc_STRVAR(split_default_tables_doc,
    "split_default_tables(text, concat_ref, reference, grapheme, smart_replaced)\n\n"
    "The Segmentation of a non-empty text with the default GSM tables, or None when the\n"
    "text holds a lone surrogate. More than 255 parts give an empty udh list.");

static PyObject *
split_default_tables(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "split_default_tables takes 5 arguments");
        return NULL;
    }
    if (segmentation_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "engine._native_segment is not configured");
        return NULL;
    }
    PyObject *text = args[0];
    if (!PyUnicode_Check(text) || PyUnicode_GET_LENGTH(text) == 0) {
        PyErr_SetString(PyExc_TypeError, "split_default_tables: text must be a non-empty str");
        return NULL;
    }
    long concat_ref = PyLong_AsLong(args[1]);
    unsigned long reference = PyLong_AsUnsignedLong(args[2]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if ((concat_ref != 8 && concat_ref != 16) || reference >> concat_ref) {
        PyErr_SetString(PyExc_ValueError, "split_default_tables: a bad concatenation reference");
        return NULL;
    }
    int grapheme = PyObject_IsTrue(args[3]);
    if (grapheme < 0) {
        return NULL;
    }
    int bits = (int)concat_ref;
    unsigned int value = (unsigned int)reference;
    switch (PyUnicode_KIND(text)) {
    case PyUnicode_1BYTE_KIND:
        return segment_kind(PyUnicode_1BYTE_KIND, text, bits, value, grapheme, args[4]);
    case PyUnicode_2BYTE_KIND:
        return segment_kind(PyUnicode_2BYTE_KIND, text, bits, value, grapheme, args[4]);
    default:
        return segment_kind(PyUnicode_4BYTE_KIND, text, bits, value, grapheme, args[4]);
    }
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL, configure_doc},
    {"split_default_tables", (PyCFunction)(void (*)(void))split_default_tables, METH_FASTCALL,
     split_default_tables_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "engine._native_segment",
    .m_doc = "segment_text with the default GSM tables, in C (see engine/segment.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__native_segment(void)
{
    return PyModule_Create(&module_definition);
}
