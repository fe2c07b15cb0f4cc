#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0 OR MIT
"""libscx_hints from Python through ctypes: no build step, no dependency.

    python3 hints_example.py [PATH/TO/libscx_hints.so.0]

Checks what it shows and exits non-zero if anything is off.
"""
import ctypes
import ctypes.util
import errno
import sys
import threading

CLASSES = {"normal": 0, "critical": 1, "interactive": 2, "batch": 3, "background": 4}


class Saved(ctypes.Structure):
    _fields_ = [("latency_class", ctypes.c_int32), ("priority", ctypes.c_int32)]


def load(path=None):
    lib = ctypes.CDLL(path or ctypes.util.find_library("scx_hints") or "libscx_hints.so.0")
    lib.scx_hints_set_latency_class.argtypes = [ctypes.c_int]
    lib.scx_hints_set_priority.argtypes = [ctypes.c_int]
    lib.scx_hints_save.restype = Saved
    lib.scx_hints_restore.argtypes = [Saved]
    lib.scx_hints_registration.argtypes = [ctypes.POINTER(ctypes.c_int)]
    return lib


class latency_class:
    """`with latency_class(lib, "background"):` runs the block in that class."""

    def __init__(self, lib, name):
        self.lib, self.cls = lib, CLASSES[name]

    def __enter__(self):
        self.saved = self.lib.scx_hints_save()
        self.lib.scx_hints_set_latency_class(self.cls)

    def __exit__(self, *exc):
        self.lib.scx_hints_restore(self.saved)
        return False


def main():
    lib = load(sys.argv[1] if len(sys.argv) > 1 else None)
    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)

    check(lib.scx_hints_set_latency_class(CLASSES["interactive"]) == 0, "set class")
    check(lib.scx_hints_set_latency_class(9) == -errno.EINVAL, "bad class refused")
    check(lib.scx_hints_set_priority(-21) == -errno.ERANGE, "bad priority refused")
    with latency_class(lib, "background"):
        check(lib.scx_hints_latency_class() == CLASSES["background"], "class in scope")
    check(lib.scx_hints_latency_class() == CLASSES["interactive"], "class restored")

    seen = []
    t = threading.Thread(target=lambda: seen.append(lib.scx_hints_latency_class()))
    t.start()
    t.join()
    check(seen == [CLASSES["normal"]], "a new thread starts normal")

    err = ctypes.c_int(0)
    state = lib.scx_hints_registration(ctypes.byref(err))
    print(f"registration state {state}, errno {err.value}")
    if failures:
        print("checks failed: " + ", ".join(failures), file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
