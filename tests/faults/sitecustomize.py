"""Fault injection for tests/test_faults.py, loaded by subprocesses through PYTHONPATH.

``SNNRUN_FAULT=<kind>:<n>`` makes the n-th ``torch.save`` (1-based) of the process:
- ``kill``: write part of the file, then SIGKILL the process (a kill mid-checkpoint-write);
- ``enospc``: write part of the file, then fail with "No space left on device";
- ``erofs``: fail with "Read-only file system" (a run dir that became read-only).
``SNNRUN_FAULT=mkdir_erofs:<path>`` makes creating folders under <path> fail (read-only parent).
"""

import errno
import os

_FAULT = os.environ.get("SNNRUN_FAULT", "")

if _FAULT.startswith("mkdir_erofs:"):
    _root = _FAULT.split(":", 1)[1]
    _mkdir = os.mkdir

    def _failing_mkdir(path, *args, **kwargs):
        if os.path.abspath(path).startswith(_root):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return _mkdir(path, *args, **kwargs)

    os.mkdir = _failing_mkdir
elif _FAULT:
    import signal

    import torch

    _kind, _n = _FAULT.split(":")
    _save = torch.save
    _calls = [0]

    def _faulty_save(obj, f, *args, **kwargs):
        _calls[0] += 1
        if _calls[0] < int(_n):
            return _save(obj, f, *args, **kwargs)
        if _kind == "erofs":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), getattr(f, "name", None))
        f.write(b"PK\x03\x04 partial checkpoint")
        f.flush()
        if _kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), getattr(f, "name", None))

    torch.save = _faulty_save
