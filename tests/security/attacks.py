"""What a hostile job author's code tries, as plain Python (no resonfl import): it runs as
job code, inside the sandbox when the platform works. `ATTACK` is appended to a job's
model_def.py or run as a script; `attack(cfg)` returns a compact report of what it reached:

- ``s``: secret markers (hex, as given) found in any readable /proc/<pid>/environ (the worker's included)
- ``p``: how many other processes it can see in /proc
- ``f``: files it could read (the database file, other jobs' folders, secret files)
- ``n``: TCP ports on 127.0.0.1 it could connect to (API, Redis, PostgreSQL, ...)
- ``u``: its uid
"""

ATTACK = r'''

import json as _json
import os as _os
import socket as _socket


def attack(cfg):
    me = _os.getpid()
    secrets, pids = [], 0
    for pid in _os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in (me, 1):
            continue
        pids += 1
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        # markers come hex-encoded, so a traceback quoting this code does not contain them
        secrets += [h for h in cfg["markers"] if bytes.fromhex(h) in env and h not in secrets]
    files = []
    for path in cfg["paths"]:
        try:
            if _os.path.isdir(path):
                _os.listdir(path)
            else:
                with open(path, "rb") as fh:
                    fh.read(16)
            files.append(path)
        except OSError:
            pass
    ports = []
    for port in cfg["ports"]:
        sock = _socket.socket()
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", port))
            ports.append(port)
        except OSError:
            pass
        finally:
            sock.close()
    return {"s": secrets, "p": pids, "f": files, "n": ports, "u": _os.getuid()}
'''

FORK_BOMB = r'''
import os, sys, time
forks = 0
try:
    for _ in range(int(sys.argv[1])):
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        forks += 1
except OSError as exc:
    print("fork refused:", exc)
print("FORKS", forks, flush=True)
'''

MEMORY_BOMB = r'''
import sys
try:
    block = bytearray(int(sys.argv[1]) * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    print("ALLOCATED", len(block) // 2**20, flush=True)
except MemoryError:
    print("MEMORY REFUSED", flush=True)
'''

SETSID_ESCAPE = r'''
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # double fork: reparented, in a session of its own
        os.execv(sys.executable, [sys.executable, "-c", "import time; " + sys.argv[1]])
    os._exit(0)
time.sleep(0.5)
print("ESCAPED", flush=True)
'''
