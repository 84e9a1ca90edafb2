//! Turns a `ResolvedApp` into what the runtime needs: the image request, and one
//! `ReplicaSpec` per replica. Also the checks haloyd repeats on a config it receives over the
//! API (the CLI validated it already, but the API must not trust its callers).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{HistoryStrategy, NamingStrategy, ResolvedApp, VolumeSpec};
use crate::runtime::{
    ImageInfo, ImageRequest, RegistryCredentials, ReplicaSpec, VolumeMount, VolumeSource,
};

impl ResolvedApp {
    /// `repo:tag`, or `repo@sha256:…` once pinned by a rollback.
    pub fn image_reference(&self) -> String {
        self.image.reference()
    }

    pub fn image_request(&self) -> ImageRequest {
        ImageRequest {
            app: Some(self.name.clone()),
            reference: self.image_reference(),
            pull_policy: self.image.pull_policy,
            credentials: self.image.registry.as_ref().map(|r| RegistryCredentials {
                username: r.username.clone(),
                password: r.password.expose().to_string(),
            }),
        }
    }

    /// `naming_strategy: static` and `network` travel to the runtime as labels; static: the container is then
    /// named after the app (validation keeps such apps at one replica, strategy replace).
    fn naming_labels(&self) -> std::collections::BTreeMap<String, String> {
        let mut labels = std::collections::BTreeMap::new();
        if self.naming_strategy == NamingStrategy::Static {
            labels.insert(
                crate::runtime::labels::NAMING.to_string(),
                "static".to_string(),
            );
        }
        // The runtime attaches the replica to this network; on the container it survives
        // haloyd restarts.
        if let Some(network) = self
            .network
            .as_deref()
            .filter(|n| *n != crate::dns::DEFAULT_NETWORK)
        {
            labels.insert(
                crate::runtime::labels::NETWORK.to_string(),
                network.to_string(),
            );
        }
        labels
    }

    /// How many successful deploys keep their image for rollback.
    pub fn image_history_count(&self) -> usize {
        match self.image.history.strategy {
            // Haloy (internal/deploy/deploy.go): `registry` keeps only the current image on
            // the server; a rollback pulls the old tag again.
            HistoryStrategy::None | HistoryStrategy::Registry => 1,
            HistoryStrategy::Local => self.image.history.count as usize,
        }
    }

    /// Problems that make a received config undeployable, in the CLI's wording; empty when
    /// it is fine. The API must not trust its callers to have validated.
    pub fn validate_for_deploy(&self) -> Vec<String> {
        let mut problems = self.problems();
        // `haloy deploy` builds and uploads such an image first and sends `never`; anything
        // else would look for the app's own image in a public registry.
        if self.image.build
            && self.image.pushes_to_server()
            && self.image.pull_policy != crate::config::PullPolicy::Never
        {
            problems.push(format!(
                "image: `{}` is built on deploy and uploaded to the server, but this request did not upload it; deploy with `haloy deploy`, which builds and uploads it",
                self.image_reference()
            ));
        }
        problems
    }

    pub fn replica_spec(
        &self,
        deployment_id: &str,
        replica: u32,
        image: &ImageInfo,
    ) -> ReplicaSpec {
        ReplicaSpec {
            app: self.name.clone(),
            deployment_id: deployment_id.to_string(),
            replica,
            image: image.clone(),
            env: self
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
            port: self.port,
            health_check_path: self.health_check_path.clone(),
            domains: self
                .domains
                .iter()
                .flat_map(|d| std::iter::once(d.domain.clone()).chain(d.aliases.iter().cloned()))
                .collect(),
            labels: self.naming_labels(),
            volumes: self.volumes.iter().map(volume_mount).collect(),
            resources: self.resources.unwrap_or_default(),
            seccomp: self.security.seccomp,
            stop_timeout: Duration::from_secs(u64::from(self.stop_timeout)),
            init: self.init,
        }
    }
}

fn volume_mount(volume: &VolumeSpec) -> VolumeMount {
    match volume {
        VolumeSpec::Bind {
            host,
            container,
            read_only,
        } => VolumeMount {
            source: VolumeSource::Bind(PathBuf::from(host)),
            target: container.clone(),
            read_only: *read_only,
        },
        VolumeSpec::Named {
            name,
            container,
            read_only,
        } => VolumeMount {
            source: VolumeSource::Named(name.clone()),
            target: container.clone(),
            read_only: *read_only,
        },
    }
}
