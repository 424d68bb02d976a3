//! Seccomp profiles: RuntimeDefault (Docker's `profiles/seccomp/default.json`),
//! Unconfined, Localhost.
//!
//! RuntimeDefault is Docker's default profile rendered for the build
//! target's architecture and the container's capability set:
//! - default action `SCMP_ACT_ERRNO` with `defaultErrnoRet` 1 (EPERM);
//! - architectures: x86_64 + x86, or aarch64 + arm (none on other
//!   targets, i.e. the native one only). Docker also lists x32 on x86_64;
//!   herd leaves that ABI out: x32 container userlands do not exist in
//!   practice, its syscalls are then refused like any other architecture's,
//!   and libseccomp's x32 filter alone costs runc about 4.6 ms per
//!   container start (measured here: 49.5 ms median with x32, 44.9 without,
//!   60 runs each interleaved);
//! - the unconditional allow list, `socket` unless the family is AF_VSOCK,
//!   `personality` for the five personas Docker allows, the arch-specific
//!   calls (`arch_prctl`, `modify_ldt` / the arm ones);
//! - per-capability extras (e.g. CAP_SYS_ADMIN: `mount`, `unshare`,
//!   `setns`, `clone`/`clone3` unrestricted …);
//! - without CAP_SYS_ADMIN: `clone` only without namespace flags (mask
//!   0x7E020000 must be clear), `clone3` fails with ENOSYS so libcs fall
//!   back to `clone`.
//!
//! Simplified: the `minKernel: 4.8` condition on `ptrace`/`process_vm_*` is
//! treated as always true, and the s390/ppc/mips/riscv entries are left out.
//! Syscall names the host's libseccomp does not know are skipped by runc.

use std::path::Path;

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompArgBuilder, LinuxSeccompOperator, LinuxSyscall,
};

use super::SpecError;
use crate::types::SeccompProfile;

#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset",
    "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres",
    "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat",
    "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
    "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
    "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
    "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchown",
    "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock",
    "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_time64", "futex_waitv",
    "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32",
    "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer",
    "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom",
    "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list",
    "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid",
    "gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch", "inotify_init",
    "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents",
    "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup",
    "io_submit", "io_uring_enter", "io_uring_register", "io_uring_setup", "ipc", "kill",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown",
    "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr", "_llseek",
    "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "membarrier",
    "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock",
    "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect",
    "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
    "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
    "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg",
    "remap_file_pages", "removexattr", "rename", "renameat", "renameat2", "restart_syscall",
    "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp",
    "select", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send",
    "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32",
    "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer",
    "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32",
    "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list",
    "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32",
    "setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
    "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat",
    "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range",
    "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete",
    "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64",
    "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
    // Docker gates these on kernel >= 4.8; every supported kernel qualifies.
    "process_vm_readv", "process_vm_writev", "ptrace",
];

/// Extra syscalls allowed when the container holds a capability.
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// Namespace flags `clone` may not carry without CAP_SYS_ADMIN
/// (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET).
const CLONE_NS_MASK: u64 = 0x7E02_0000;
const AF_VSOCK: u64 = 40;
const ENOSYS: u32 = 38;
const EPERM: u32 = 1;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn syscall(list: &[&str], action: LinuxSeccompAction, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names(list));
    s.set_action(action);
    if !args.is_empty() {
        s.set_args(Some(args));
    }
    s
}

/// An argument condition. `None` only if the builder fails, which its
/// all-defaulted fields rule out; callers then drop the whole (allow) rule,
/// so a failure can only narrow the profile.
fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> Option<LinuxSeccompArg> {
    let b = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    match value_two {
        Some(v) => b.value_two(v),
        None => b,
    }
    .build()
    .ok()
}

fn architectures() -> Option<Vec<Arch>> {
    if cfg!(target_arch = "x86_64") {
        Some(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86])
    } else if cfg!(target_arch = "aarch64") {
        Some(vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm])
    } else {
        None
    }
}

fn arch_specific() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") {
        &["arch_prctl", "modify_ldt"]
    } else if cfg!(target_arch = "aarch64") {
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ]
    } else {
        &[]
    }
}

/// Docker's default profile for a container holding `caps`.
pub fn seccomp_for_capabilities(caps: &Capabilities) -> LinuxSeccomp {
    use LinuxSeccompAction::{ScmpActAllow as Allow, ScmpActErrno as Errno};
    use LinuxSeccompOperator::{ScmpCmpEq as Eq, ScmpCmpMaskedEq as MaskedEq, ScmpCmpNe as Ne};
    let mut rules = vec![syscall(ALLOWED, Allow, vec![])];
    if let Some(a) = arg(0, AF_VSOCK, None, Ne) {
        rules.push(syscall(&["socket"], Allow, vec![a]));
    }
    for persona in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
        if let Some(a) = arg(0, persona, None, Eq) {
            rules.push(syscall(&["personality"], Allow, vec![a]));
        }
    }
    let arch = arch_specific();
    if !arch.is_empty() {
        rules.push(syscall(arch, Allow, vec![]));
    }
    for (cap, list) in BY_CAPABILITY {
        if caps.contains(cap) {
            rules.push(syscall(list, Allow, vec![]));
        }
    }
    if !caps.contains(&Capability::SysAdmin) {
        if let Some(a) = arg(0, CLONE_NS_MASK, Some(0), MaskedEq) {
            rules.push(syscall(&["clone"], Allow, vec![a]));
        }
        let mut clone3 = syscall(&["clone3"], Errno, vec![]);
        clone3.set_errno_ret(Some(ENOSYS));
        rules.push(clone3);
    }
    let mut s = LinuxSeccomp::default();
    s.set_default_action(Errno);
    s.set_default_errno_ret(Some(EPERM));
    s.set_architectures(architectures());
    s.set_syscalls(Some(rules));
    s
}

/// RuntimeDefault for a container with the default capabilities.
pub fn runtime_default_seccomp() -> LinuxSeccomp {
    seccomp_for_capabilities(&super::default_capabilities().into_iter().collect())
}

/// Reads a Localhost profile (OCI `linux.seccomp` JSON).
fn load_profile(path: &Path) -> Result<LinuxSeccomp, SpecError> {
    let bytes = std::fs::read(path).map_err(|source| SpecError::SeccompRead {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| SpecError::SeccompParse {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn select_profile(
    profile: &SeccompProfile,
    caps: &Capabilities,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    match profile {
        SeccompProfile::RuntimeDefault => Ok(Some(seccomp_for_capabilities(caps))),
        SeccompProfile::Unconfined => Ok(None),
        SeccompProfile::Localhost(path) => load_profile(path).map(Some),
    }
}
