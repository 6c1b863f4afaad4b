"""The chaos cluster's network: a bridge in the harness's own namespace, a namespace per node.

``bench.chaos`` re-executes itself under ``unshare --net`` (:func:`enter_own_namespace`), so the
bridge, its veth ends and every address below exist only in namespaces this run made: the host's
own interfaces and routes are never touched, and nothing has a route off the machine (there is no
default route anywhere, which :func:`isolate_hub` checks). Addresses come from 198.18.0.0/15,
the range RFC 2544 sets aside for network benchmarks. Each node namespace is held open by a
``sleep`` child (killed with the harness: ``PR_SET_PDEATHSIG``); processes enter it through
``nsenter --net=/proc/<pid>/ns/net``. Cutting a node off is its veth going down.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

SUBNET_PREFIX = "198.18.0"
HUB_ADDRESS = f"{SUBNET_PREFIX}.1"
BRIDGE = "chaosbr0"
INSIDE_FLAG = "--inside-netns"
PR_SET_PDEATHSIG = 1


class NetworkError(RuntimeError):
    """The namespaces could not be made (not root, no ``unshare``/``ip``)."""


def ip(*args: str, wrapper: Sequence[str] = ()) -> None:
    result = subprocess.run([*wrapper, "ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when the harness dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def enter_own_namespace(argv: Sequence[str]) -> int:
    """Run ``python -m bench.chaos <argv> --inside-netns`` in a new network namespace; its code."""
    if os.geteuid() != 0:
        raise NetworkError("bench.chaos needs root: it makes network namespaces")
    command = ["unshare", "--net", "--", sys.executable, "-m", "bench.chaos", *argv, INSIDE_FLAG]
    return subprocess.call(command)


def isolate_hub() -> None:
    """Loopback and the bridge up in the harness's namespace; fail if any route leads out."""
    ip("link", "set", "lo", "up")
    ip("link", "add", BRIDGE, "type", "bridge")
    ip("addr", "add", f"{HUB_ADDRESS}/24", "dev", BRIDGE)
    ip("link", "set", BRIDGE, "up")
    routes = subprocess.run(
        ["ip", "route", "show", "default"], capture_output=True, text=True, check=True
    )
    if routes.stdout.strip():
        raise NetworkError("the harness's namespace has a default route: refusing to run")


@dataclass
class NodeNamespace:
    """One node's network namespace: a veth to the bridge, one address, loopback."""

    index: int
    holder: subprocess.Popen[bytes] = field(init=False)

    @property
    def address(self) -> str:
        return f"{SUBNET_PREFIX}.{10 + self.index}"

    @property
    def hub_end(self) -> str:
        return f"chaosh{self.index}"

    @property
    def wrapper(self) -> list[str]:
        """The command prefix that runs a program inside this namespace."""
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--"]

    def create(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # the namespace must not outlive us
        )
        inner = f"chaosn{self.index}"
        ip("link", "add", self.hub_end, "type", "veth", "peer", "name", inner)
        self._wait_namespace()
        ip("link", "set", inner, "netns", str(self.holder.pid))
        ip("link", "set", self.hub_end, "master", BRIDGE)
        ip("link", "set", self.hub_end, "up")
        ip("link", "set", "lo", "up", wrapper=self.wrapper)
        ip("addr", "add", f"{self.address}/24", "dev", inner, wrapper=self.wrapper)
        ip("link", "set", inner, "up", wrapper=self.wrapper)

    def _wait_namespace(self) -> None:
        """``unshare`` execs ``sleep`` once the namespace exists: wait for that exec."""
        own = os.readlink("/proc/self/ns/net")
        for _ in range(200):
            try:
                if os.readlink(f"/proc/{self.holder.pid}/ns/net") != own:
                    return
            except FileNotFoundError:
                break
            time.sleep(0.01)  # a poll interval (setup, not the event loop)
        raise NetworkError(f"namespace holder {self.holder.pid} did not unshare")

    def cut(self) -> None:
        """The node loses the bridge: database, fakes and clients, until :meth:`mend`."""
        ip("link", "set", self.hub_end, "down")

    def mend(self) -> None:
        ip("link", "set", self.hub_end, "up")

    def close(self) -> None:
        if self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait(10)
