//! A rule's `securityContext` (the pod's) and `containerSecurityContext` (the selected
//! containers'), and the security context of the containers a rule adds: user and group ids,
//! seccomp and AppArmor profiles, capabilities, sysctls, as the apiserver checks them.
//!
//! Only reads and checks them; applying them field by field is the engine's business. Never
//! stops at the first problem.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext};
use serde_json::Value;

use super::{Checker, index_path, key_path};

/// The largest user or group id the apiserver accepts.
const MAX_ID: i64 = i32::MAX as i64;

impl Checker {
    pub(super) fn pod_security_context(
        &mut self,
        value: &Value,
        path: &str,
    ) -> Option<PodSecurityContext> {
        let since = self.problems.len();
        let context: PodSecurityContext = self.k8s(value, path)?;
        self.id(context.run_as_user, &key_path(path, "runAsUser"), "user");
        self.id(context.run_as_group, &key_path(path, "runAsGroup"), "group");
        self.id(context.fs_group, &key_path(path, "fsGroup"), "group");
        for (i, group) in context.supplemental_groups.iter().flatten().enumerate() {
            self.id(
                Some(*group),
                &index_path(&key_path(path, "supplementalGroups"), i),
                "group",
            );
        }
        self.one_of(
            context.fs_group_change_policy.as_deref(),
            &key_path(path, "fsGroupChangePolicy"),
            &["OnRootMismatch", "Always"],
        );
        self.one_of(
            context.supplemental_groups_policy.as_deref(),
            &key_path(path, "supplementalGroupsPolicy"),
            &["Merge", "Strict"],
        );
        self.one_of(
            context.se_linux_change_policy.as_deref(),
            &key_path(path, "seLinuxChangePolicy"),
            &["MountOption", "Recursive"],
        );
        if let Some(profile) = &context.seccomp_profile {
            self.profile(
                &profile.type_,
                profile.localhost_profile.as_deref(),
                &key_path(path, "seccompProfile"),
            );
        }
        if let Some(profile) = &context.app_armor_profile {
            self.profile(
                &profile.type_,
                profile.localhost_profile.as_deref(),
                &key_path(path, "appArmorProfile"),
            );
        }
        let mut names = HashSet::new();
        for (i, sysctl) in context.sysctls.iter().flatten().enumerate() {
            let p = index_path(&key_path(path, "sysctls"), i);
            let np = key_path(&p, "name");
            if !is_sysctl_name(&sysctl.name) {
                self.problem(
                    &np,
                    format!("{:?} is not a sysctl name: at most 253 characters of parts of a-z, 0-9, '-' and '_' (starting and ending with a letter or digit) joined by '.' or '/'", sysctl.name),
                );
            } else if !names.insert(sysctl.name.as_str()) {
                self.problem(
                    np,
                    format!("{:?} is set twice; each sysctl once", sysctl.name),
                );
            }
        }
        (self.problems.len() == since).then_some(context)
    }

    pub(super) fn container_security_context(
        &mut self,
        value: &Value,
        path: &str,
    ) -> Option<SecurityContext> {
        let since = self.problems.len();
        let context: SecurityContext = self.k8s(value, path)?;
        self.check_container_security_context(&context, path);
        (self.problems.len() == since).then_some(context)
    }

    /// A container's security context; for `containerSecurityContext` and the containers a
    /// rule adds alike.
    pub(super) fn check_container_security_context(
        &mut self,
        context: &SecurityContext,
        path: &str,
    ) {
        self.id(context.run_as_user, &key_path(path, "runAsUser"), "user");
        self.id(context.run_as_group, &key_path(path, "runAsGroup"), "group");
        self.one_of(
            context.proc_mount.as_deref(),
            &key_path(path, "procMount"),
            &["Default", "Unmasked"],
        );
        if let Some(profile) = &context.seccomp_profile {
            self.profile(
                &profile.type_,
                profile.localhost_profile.as_deref(),
                &key_path(path, "seccompProfile"),
            );
        }
        if let Some(profile) = &context.app_armor_profile {
            self.profile(
                &profile.type_,
                profile.localhost_profile.as_deref(),
                &key_path(path, "appArmorProfile"),
            );
        }
        if let Some(capabilities) = &context.capabilities {
            for (list, names) in [("add", &capabilities.add), ("drop", &capabilities.drop)] {
                for (i, name) in names.iter().flatten().enumerate() {
                    self.required(
                        name,
                        &index_path(&key_path(&key_path(path, "capabilities"), list), i),
                        "a capability name such as NET_ADMIN or ALL",
                    );
                }
            }
        }
        // The apiserver's own consistency rules: no privilege escalation is a lie for a
        // privileged container or one given CAP_SYS_ADMIN.
        if context.allow_privilege_escalation == Some(false) {
            let p = key_path(path, "allowPrivilegeEscalation");
            if context.privileged == Some(true) {
                self.problem(&p, "cannot be false when privileged is true");
            }
            let sys_admin = context
                .capabilities
                .as_ref()
                .and_then(|c| c.add.as_ref())
                .is_some_and(|add| add.iter().any(|c| c == "SYS_ADMIN" || c == "CAP_SYS_ADMIN"));
            if sys_admin {
                self.problem(p, "cannot be false when capabilities.add holds SYS_ADMIN");
            }
        }
    }

    /// A user or group id: 0 to 2147483647.
    fn id(&mut self, id: Option<i64>, path: &str, what: &str) {
        if let Some(id) = id
            && !(0..=MAX_ID).contains(&id)
        {
            self.problem(
                path,
                format!("{id} is not a {what} id; allowed: 0 to {MAX_ID}"),
            );
        }
    }

    /// A seccomp or AppArmor profile: a known type, and a localhost profile for and only for
    /// `Localhost`.
    fn profile(&mut self, kind: &str, localhost: Option<&str>, path: &str) {
        let type_path = key_path(path, "type");
        self.one_of(
            Some(kind),
            &type_path,
            &["RuntimeDefault", "Localhost", "Unconfined"],
        );
        let localhost_path = key_path(path, "localhostProfile");
        match (kind, localhost.filter(|l| !l.is_empty())) {
            ("Localhost", None) => self.problem(
                localhost_path,
                "missing; type Localhost needs the profile's file (relative to the kubelet's profile directory)",
            ),
            ("Localhost", Some(_)) => {}
            (_, Some(_)) => self.problem(
                localhost_path,
                format!("only allowed with type Localhost, not {kind:?}"),
            ),
            (_, None) => {}
        }
    }
}

/// The kernel's sysctl names as the apiserver accepts them, `.` or `/` separated.
fn is_sysctl_name(name: &str) -> bool {
    let part_ok = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            && part.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    name.len() <= 253 && name.split(['.', '/']).all(part_ok)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{has, rule, rule_problems};

    #[test]
    fn security_contexts_land_in_the_rule() {
        let rule = rule(
            r#"    securityContext:
      runAsNonRoot: true
      runAsUser: 185
      fsGroup: 185
      fsGroupChangePolicy: OnRootMismatch
      seccompProfile: {type: Localhost, localhostProfile: profiles/spark.json}
      sysctls: [{name: net.core.somaxconn, value: "1024"}, {name: kernel/shm_rmid_forced, value: "1"}]
    containerSecurityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
      seccompProfile: {type: RuntimeDefault}
      procMount: Default
"#,
        );
        let pod = rule.pod.security_context.as_ref().expect("pod context");
        assert_eq!(pod.run_as_user, Some(185));
        assert_eq!(pod.fs_group, Some(185));
        assert_eq!(
            pod.seccomp_profile
                .as_ref()
                .and_then(|p| p.localhost_profile.as_deref()),
            Some("profiles/spark.json")
        );
        assert_eq!(pod.sysctls.as_ref().map(Vec::len), Some(2));
        let container = rule
            .pod
            .container_security_context
            .as_ref()
            .expect("container context");
        assert_eq!(container.allow_privilege_escalation, Some(false));
        assert_eq!(
            container.capabilities.as_ref().and_then(|c| c.add.clone()),
            Some(vec!["NET_BIND_SERVICE".to_owned()])
        );
    }

    #[test]
    fn security_context_mistakes_say_what_is_allowed() {
        let found = rule_problems(
            r#"    securityContext:
      runAsUser: -1
      runAsGroup: 3000000000
      fsGroup: -5
      fsGroupChangePolicy: Sometimes
      seccompProfile: {type: Localhost}
      appArmorProfile: {type: RuntimeDefault, localhostProfile: x}
      sysctls: [{name: "net..core", value: "1"}, {name: kernel.msgmax, value: "1"}, {name: kernel.msgmax, value: "2"}]
      runAsNonRoot: "yes"
    containerSecurityContext:
      privileged: true
      allowPrivilegeEscalation: false
      procMount: Masked
      seccompProfile: {type: Strict}
      capabilities: {add: [SYS_ADMIN, 7]}
"#,
        );
        let pod = "rules[0].securityContext";
        has(
            &found,
            &format!("{pod}.runAsUser"),
            "-1 is not a user id; allowed: 0 to 2147483647",
        );
        has(&found, &format!("{pod}.runAsGroup"), "not a group id");
        has(&found, &format!("{pod}.fsGroup"), "not a group id");
        has(
            &found,
            &format!("{pod}.fsGroupChangePolicy"),
            "allowed: OnRootMismatch, Always",
        );
        has(
            &found,
            &format!("{pod}.seccompProfile.localhostProfile"),
            "missing; type Localhost needs",
        );
        has(
            &found,
            &format!("{pod}.appArmorProfile.localhostProfile"),
            "only allowed with type Localhost",
        );
        has(
            &found,
            &format!("{pod}.sysctls[0].name"),
            "not a sysctl name",
        );
        has(&found, &format!("{pod}.sysctls[2].name"), "set twice");
        has(
            &found,
            &format!("{pod}.runAsNonRoot"),
            "invalid type: string \"yes\", expected a boolean",
        );
        let container = "rules[0].containerSecurityContext";
        has(
            &found,
            &format!("{container}.allowPrivilegeEscalation"),
            "cannot be false when privileged is true",
        );
        has(
            &found,
            &format!("{container}.procMount"),
            "allowed: Default, Unmasked",
        );
        has(
            &found,
            &format!("{container}.seccompProfile.type"),
            "allowed: RuntimeDefault, Localhost, Unconfined",
        );
        has(
            &found,
            &format!("{container}.capabilities.add[1]"),
            "invalid type: integer `7`, expected a string",
        );
        // The integer is reported once, and the SYS_ADMIN rule still ran on the rest.
        has(
            &found,
            &format!("{container}.allowPrivilegeEscalation"),
            "SYS_ADMIN",
        );
        assert_eq!(found.len(), 14, "{found:#?}");
    }
}
