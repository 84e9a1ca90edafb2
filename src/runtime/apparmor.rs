//! Which Linux security module profile replicas run under. haloy applies an AppArmor profile
//! for containers when the host has AppArmor enabled and such a profile loaded (Docker's
//! `docker-default` or containerd's `cri-containerd.apparmor.d`); it does not write or load
//! profiles itself. Anything else is reported once at haloyd start-up so the operator knows
//! which defence is missing. Reads only the given sysfs root, so tests use a fake one.

use std::path::Path;

/// Container profiles haloy uses when loaded, in order of preference.
pub const KNOWN_PROFILES: &[&str] = &["docker-default", "cri-containerd.apparmor.d"];

/// What `decide` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LsmDecision {
    /// Run every task under this AppArmor profile.
    AppArmor(String),
    /// No profile applied; the sentence says which module is missing or unused and why.
    None(String),
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Profile names from securityfs's `apparmor/profiles` ("name (mode)" per line).
fn loaded_profiles(sys: &Path) -> Vec<String> {
    read_trimmed(&sys.join("kernel/security/apparmor/profiles"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.rsplit_once(" (").map(|(name, _)| name.to_string()))
        .collect()
}

/// Looks at `sys` (normally `/sys`) and picks the profile replicas run under.
pub fn decide(sys: &Path) -> LsmDecision {
    let apparmor = read_trimmed(&sys.join("module/apparmor/parameters/enabled"));
    if apparmor.as_deref().is_some_and(|v| v.starts_with('Y')) {
        let loaded = loaded_profiles(sys);
        return match KNOWN_PROFILES
            .iter()
            .find(|p| loaded.iter().any(|l| l == *p))
        {
            Some(profile) => LsmDecision::AppArmor(profile.to_string()),
            None => LsmDecision::None(format!(
                "AppArmor is enabled but no container profile is loaded ({}); replicas run \
                 without one. Load Docker's or containerd's profile with apparmor_parser",
                KNOWN_PROFILES.join(" or ")
            )),
        };
    }
    if sys.join("fs/selinux/enforce").exists() {
        return LsmDecision::None(
            "SELinux is enabled but haloy does not label containers yet; replicas run with the \
             default label of containerd's process"
                .into(),
        );
    }
    LsmDecision::None(
        "neither AppArmor nor SELinux is enabled on this host; replicas run without an LSM \
         profile (seccomp, dropped capabilities and no_new_privileges still apply)"
            .into(),
    )
}

#[cfg(test)]
#[path = "tests/apparmor.rs"]
mod tests;
