/* The pcap record walk of netmon.sources.pcapfile, compiled: the one loop over every
 * record of a capture that numpy cannot do (each record's position depends on the one
 * before it). Several times faster than the walk in Python (59 against 172 ns a record
 * on a 4 MB chunk, measured on a busy 2-core machine), and the GIL is released while it
 * runs, so the pipeline's thread can decode the batch before while the source's thread
 * walks the next one.
 *
 * walk(buf, pos, big_endian) -> bytes: native int64 positions of consecutive record
 * headers from pos, exactly as pcapfile._walk_pcap_python lists them: the last position
 * is the first whose 12 header bytes up to the captured length do not fit in buf (a cut
 * record, or the end). Nothing is trusted: every read is bounds-checked first.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static PyObject *walk(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start;
    int big_endian;
    if (!PyArg_ParseTuple(args, "y*np", &view, &start, &big_endian))
        return NULL;
    if (start < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "negative start position");
        return NULL;
    }
    const unsigned char *buf = view.buf;
    const int64_t size = view.len;
    /* room for records of 256 bytes on average, grown when they are smaller */
    Py_ssize_t room = (Py_ssize_t)(size / 256) + 64, count = 0;
    int64_t *positions = PyMem_RawMalloc((size_t)room * sizeof(int64_t));
    int64_t pos = start;
    int full = positions == NULL;
    Py_BEGIN_ALLOW_THREADS
    while (!full) {
        if (count == room) {
            int64_t *more = PyMem_RawRealloc(positions, (size_t)room * 2 * sizeof(int64_t));
            if (more == NULL) {
                full = 1;
                break;
            }
            positions = more;
            room *= 2;
        }
        positions[count++] = pos;
        if (pos > size - 12)
            break;
        const unsigned char *b = buf + pos + 8;
        const uint32_t caplen = big_endian
            ? (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]
            : (uint32_t)b[3] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[1] << 8 | b[0];
        pos += 16 + (int64_t)caplen;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *out = full ? PyErr_NoMemory() : PyBytes_FromStringAndSize((const char *)positions, count * (Py_ssize_t)sizeof(int64_t));
    PyMem_RawFree(positions);
    return out;
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, "walk(buf, pos, big_endian) -> bytes of int64 record header positions"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pcapwalk", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pcapwalk(void) { return PyModule_Create(&module); }
