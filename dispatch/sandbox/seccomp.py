"""The seccomp filter of every sandboxed run: the kernel interfaces a workflow has no use for.

Built once by the server with libseccomp (``pyseccomp``) and exported as a BPF program: bwrap
installs it with ``--seccomp <fd>`` before it execs the launcher; a zygote's child installs the
same bytes itself, last, before it loads the workflow (``inside/zygote_server.py``). Everything not
listed stays allowed (threads, ``fork``/``exec``, sockets, asyncio), so any workflow stack runs;
the listed calls fail with ``EPERM``. They are the ones behind most kernel exploits and sandbox
escapes of recent years (io_uring, user namespaces, BPF, userfaultfd, perf, keyrings), plus the
mount API and tracing, which a run never needs. README "Sandbox" lists them for operators.
"""

from __future__ import annotations

import errno
import os

DENIED = (
    # async I/O rings: a large, often-exploited kernel surface
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # kernel keyrings
    "keyctl", "add_key", "request_key",
    # eBPF programs and maps, perf events, userfaultfd (the classic race-widening primitive)
    "bpf", "perf_event_open", "userfaultfd",
    # namespaces: nothing may make or join one (bwrap's --disable-userns is the second lock)
    "unshare", "setns",
    # the mount API, old and new
    "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount",
    "fsconfig", "fspick", "mount_setattr",
    # tracing and reading other processes' memory
    "ptrace", "process_vm_readv", "process_vm_writev",
    # the kernel itself: new kernels, modules, file handles past mount boundaries
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "open_by_handle_at", "reboot", "swapon", "swapoff", "acct",
)  # fmt: skip

# clone(2) with any of these flags makes a namespace (clone3 cannot be inspected: see below).
NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}


def run_filter() -> bytes:
    """The BPF program of the runs' filter (``struct sock_filter`` array, native byte order).
    OSError where libseccomp is missing (the sandbox is then unavailable, as without bwrap)."""
    try:
        import pyseccomp  # loads libseccomp.so.2 on import
    except (ImportError, RuntimeError) as exc:
        raise OSError(
            f"libseccomp is not available ({exc}); Debian: apt-get install libseccomp2"
        ) from exc
    flt = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
    deny = pyseccomp.ERRNO(errno.EPERM)
    for name in DENIED:
        flt.add_rule(deny, name)
    for flag in NAMESPACE_FLAGS.values():
        # x86_64 and aarch64 alike: clone's flags are its first argument.
        flt.add_rule(deny, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory, out of a filter's sight. ENOSYS, as Docker and systemd
    # answer it: glibc and every runtime then fall back to clone, which the rules above see.
    flt.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    memfd = os.memfd_create("switchboard-seccomp", os.MFD_CLOEXEC)
    with os.fdopen(memfd, "w+b") as program:
        flt.export_bpf(program)
        program.seek(0)
        return program.read()
