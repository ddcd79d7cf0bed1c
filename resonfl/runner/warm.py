"""A pre-started job process: Python with torch already imported, waiting for one task.

Starting Python and importing torch costs seconds, paid in every round by every site. The
runner starts this script ahead of time (same scrubbed environment, own session), so when a
round arrives it only has to say which script to run, where, and where to log. The process
runs exactly one task and exits: one round, or (the executor's ``--serve``) the rounds of one
job on one site; nothing is ever shared between jobs.

Protocol: one JSON line on stdin: {"argv": [script, *args], "cwd": dir, "env": {...},
"log": path, "keep_stdout": bool}. With keep_stdout (a job process that serves many rounds of
one job: the executor's ``--serve``) only stderr goes to the log and stdout stays the pipe the
runner reads its control lines from; the script then reads its further requests from stdin.
Deliberately self-contained (stdlib + torch) and never imports resonfl.
"""

import json
import os
import runpy
import sys

try:  # the expensive part, done before any task is known
    import numpy  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch
    import torch.utils.data  # noqa: F401

    # An optimizer's first step imports torch._dynamo (about 1.5 s on a small CPU): pay it here.
    import torch._dynamo  # noqa: F401
except Exception:  # a job without them fails later, with its own message
    pass


def main() -> int:
    line = sys.stdin.readline()
    if not line:
        return 0  # the runner closed us without a task (shutdown)
    task = json.loads(line)
    log_fd = os.open(task["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    if not task.get("keep_stdout"):
        os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.chdir(task["cwd"])
    os.environ.update(task["env"])
    sys.argv = list(task["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0


def _exit_now(code: int) -> None:
    """Skip interpreter teardown: with torch loaded it takes most of a second, paid by every
    round. The task's outputs are written and closed by then; flush what Python buffers."""
    import gc  # lazy: at exit only
    import logging  # lazy: at exit only

    gc.collect()  # finalises unreachable file objects, flushing them
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


if __name__ == "__main__":
    try:
        status = main()
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    _exit_now(status)
