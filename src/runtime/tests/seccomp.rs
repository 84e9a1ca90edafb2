//! Unit tests of `runtime::seccomp`: the port keeps containerd's rules.

use super::*;
use crate::runtime::spec::default_capabilities;

const X86: Host<'static> = Host {
    arch: "x86_64",
    little_endian: true,
    kernel: (6, 1),
};

fn rules_naming<'a>(profile: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
    profile
        .syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|r| r.names().iter().any(|n| n == name))
        .collect()
}

fn allowed_unconditionally(profile: &LinuxSeccomp, name: &str) -> bool {
    rules_naming(profile, name).iter().any(|r| {
        r.action() == LinuxSeccompAction::ScmpActAllow
            && r.args().as_ref().is_none_or(|a| a.is_empty())
    })
}

#[test]
fn default_action_is_eperm_and_arches_include_compat_abis() {
    let profile = default_profile(&default_capabilities(), &X86).unwrap();
    assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(
        profile.default_errno_ret(),
        None,
        "runc's default errno is EPERM"
    );
    assert_eq!(
        profile.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
    );
    let arm = Host {
        arch: "aarch64",
        ..X86
    };
    assert_eq!(
        architectures(&arm),
        [Arch::ScmpArchArm, Arch::ScmpArchAarch64]
    );
}

#[test]
fn allowlist_is_containerds() {
    // containerd's list has 363 names; a few from each end and the middle.
    assert_eq!(ALLOWED.len(), 363);
    for name in [
        "accept",
        "io_uring_setup",
        "writev",
        "statx",
        "seccomp",
        "prctl",
    ] {
        let expected = name != "io_uring_setup";
        assert_eq!(ALLOWED.contains(&name), expected, "{name}");
    }
    let profile = default_profile(&default_capabilities(), &X86).unwrap();
    assert!(allowed_unconditionally(&profile, "read"));
    assert!(allowed_unconditionally(&profile, "arch_prctl"));
    assert!(allowed_unconditionally(&profile, "ptrace"), "kernel >= 4.8");
    assert!(
        allowed_unconditionally(&profile, "chroot"),
        "CAP_SYS_CHROOT"
    );
}

#[test]
fn without_cap_sys_admin_namespaces_and_mounts_are_refused() {
    let profile = default_profile(&default_capabilities(), &X86).unwrap();
    for name in [
        "unshare",
        "mount",
        "setns",
        "umount2",
        "bpf",
        "open_by_handle_at",
    ] {
        assert!(rules_naming(&profile, name).is_empty(), "{name} allowed");
    }
    let clone = rules_naming(&profile, "clone");
    assert_eq!(clone.len(), 1);
    let args = clone[0].args().as_ref().unwrap();
    assert_eq!(args.len(), 1);
    assert_eq!(args[0].index(), 0);
    assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
    assert_eq!(args[0].value_two(), Some(0));
    assert_ne!(args[0].value() & libc::CLONE_NEWUSER as u64, 0);
    assert_ne!(args[0].value() & libc::CLONE_NEWNS as u64, 0);
    let clone3 = rules_naming(&profile, "clone3");
    assert_eq!(clone3.len(), 1);
    assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(clone3[0].errno_ret(), Some(libc::ENOSYS as u32));
}

#[test]
fn cap_sys_admin_unlocks_mount_and_unrestricted_clone() {
    let mut caps = default_capabilities();
    caps.insert(Capability::SysAdmin);
    let profile = default_profile(&caps, &X86).unwrap();
    for name in ["unshare", "mount", "setns", "clone", "clone3"] {
        assert!(allowed_unconditionally(&profile, name), "{name}");
    }
    assert_eq!(rules_naming(&profile, "clone").len(), 1);
}

#[test]
fn s390x_clone_flags_are_the_second_argument_and_old_kernels_lose_ptrace() {
    let host = Host {
        arch: "s390x",
        little_endian: false,
        kernel: (4, 4),
    };
    let profile = default_profile(&default_capabilities(), &host).unwrap();
    let clone = rules_naming(&profile, "clone");
    assert_eq!(clone[0].args().as_ref().unwrap()[0].index(), 1);
    assert!(rules_naming(&profile, "ptrace").is_empty());
    assert!(allowed_unconditionally(&profile, "s390_runtime_instr"));
    assert!(rules_naming(&profile, "arch_prctl").is_empty());
}

#[test]
fn socket_excludes_af_alg_and_af_vsock_and_personality_is_filtered() {
    let profile = default_profile(&default_capabilities(), &X86).unwrap();
    let socket = rules_naming(&profile, "socket");
    let allowed = |family: u64| {
        socket.iter().any(|r| {
            let a = r.args().as_ref().unwrap()[0];
            match a.op() {
                LinuxSeccompOperator::ScmpCmpLt => family < a.value(),
                LinuxSeccompOperator::ScmpCmpEq => family == a.value(),
                LinuxSeccompOperator::ScmpCmpGt => family > a.value(),
                _ => panic!("unexpected op"),
            }
        })
    };
    for family in [
        libc::AF_UNIX,
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_NETLINK,
    ] {
        assert!(allowed(family as u64), "{family}");
    }
    assert!(!allowed(libc::AF_ALG as u64));
    assert!(!allowed(libc::AF_VSOCK as u64));
    assert_eq!(rules_naming(&profile, "personality").len(), 5);
}

#[test]
fn serializes_as_the_runtime_spec_expects() {
    let profile = default_profile(&default_capabilities(), &X86).unwrap();
    let json = serde_json::to_value(&profile).unwrap();
    assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(json["architectures"][0], "SCMP_ARCH_X86_64");
    let clone = json["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["names"][0] == "clone")
        .unwrap();
    assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(clone["args"][0]["value"], 2114060288u64);
}

#[test]
fn kernel_release_parses() {
    assert_eq!(parse_kernel_release("6.1.0-18-amd64"), (6, 1));
    assert_eq!(parse_kernel_release("4.19.0"), (4, 19));
    assert_eq!(parse_kernel_release("garbage"), (0, 0));
    assert!(kernel_version() >= (4, 8));
}
