"""Subprocesses for tests: each in its own process group, killed whole on timeout.

A forked pool whose worker died can wait forever; ``subprocess.run(timeout=...)`` would kill
only the direct child and leave its pool running.  Here the child starts a new session, and on
timeout (and after it exits) every process of that group is killed, so nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_isolated(args, *, env=None, timeout: float, cwd=None, replace_env=False):
    """Run ``args``; return the CompletedProcess.  A timeout kills the whole group and fails
    the test with what the processes printed.

    ``env`` updates a copy of this process's environment (a value of ``None`` removes the
    variable), or replaces it when ``replace_env`` is true.
    """
    full_env = {} if replace_env else dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    proc = subprocess.Popen(
        [str(a) for a in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out, err = proc.communicate()
        pytest.fail(
            f"timed out after {timeout} s (process group killed): {args}\n"
            f"--- stdout\n{out}\n--- stderr\n{err}"
        )
    kill_group(proc.pid)  # anything the child left running (a pool's workers)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def run_python(code: str, *, env=None, timeout: float = 600, cwd=None, python=None):
    """Run ``code`` (dedented) in a fresh interpreter, isolated as :func:`run_isolated`."""
    return run_isolated(
        [python or sys.executable, "-c", textwrap.dedent(code)], env=env, timeout=timeout, cwd=cwd
    )
