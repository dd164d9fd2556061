"""Fork safety: a forked child never continues its parent's sequence under the same worker ID."""

from __future__ import annotations

import os
import select
import signal
import threading

import pytest

from im_infra import uid

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")

CHILD_TIMEOUT_S = 20


def _in_child(body: str, gen: uid.SnowflakeGenerator) -> tuple[int, str]:
    """Fork; the child runs ``body`` (which may use ``gen`` and ``uid``) and reports one line."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(read_fd)
        try:
            scope = {"gen": gen, "uid": uid, "result": ""}
            exec(body, scope)  # noqa: S102 (test-only, fixed strings)
            line = str(scope["result"])
            code = 0
        except BaseException as exc:
            line = f"{type(exc).__name__}: {exc}"
            code = 1
        os.write(write_fd, line.encode())
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        ready, _, _ = select.select([reader], [], [], CHILD_TIMEOUT_S)
        if not ready:  # e.g. deadlocked on a lock held at fork time: do not leak the child
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"forked child did not answer within {CHILD_TIMEOUT_S} s")
        output = reader.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


def test_child_refuses_the_parents_generator() -> None:
    gen = uid.new_generator(21)
    parent_last = gen.next_id()
    code, output = _in_child(
        "try:\n"
        "    gen.next_id()\n"
        "    result = 'issued an ID'\n"
        "except uid.GeneratorForked as exc:\n"
        "    result = 'refused: ' + str(exc)\n",
        gen,
    )
    assert code == 0, output
    assert output.startswith("refused: "), output
    assert "forked child" in output
    assert "worker 21" in output
    # the parent is unaffected
    assert gen.next_id() > parent_last


def test_child_refuses_batches_too() -> None:
    gen = uid.new_generator(22)
    gen.next_ids(10)
    code, output = _in_child(
        "try:\n"
        "    gen.next_ids(5)\n"
        "    result = 'issued IDs'\n"
        "except uid.GeneratorForked:\n"
        "    result = 'refused'\n",
        gen,
    )
    assert (code, output) == (0, "refused")


def test_child_can_make_its_own_generator() -> None:
    gen = uid.new_generator(23)
    gen.next_id()
    code, output = _in_child(
        "own = uid.new_generator(24)\nresult = uid.parse(own.next_id()).worker\n", gen
    )
    assert (code, output) == (0, "24")


def test_fork_while_another_thread_holds_the_lock() -> None:
    gen = uid.new_generator(25)
    stop = threading.Event()
    running = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            gen.next_ids(50_000)  # holds the generator's lock for ~12 ms at a time
            running.set()

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        running.wait(timeout=10)
        code, output = _in_child(
            "try:\n"
            "    gen.next_id()\n"
            "    result = 'issued an ID'\n"
            "except uid.GeneratorForked:\n"
            "    result = 'refused'\n",
            gen,
        )
    finally:
        stop.set()
        worker.join(timeout=10)
    assert (code, output) == (0, "refused")


def test_uuid7_works_in_a_child() -> None:
    uid.uuid7()
    code, output = _in_child("result = uid.uuid7().version\n", uid.new_generator(26))
    assert (code, output) == (0, "7")
