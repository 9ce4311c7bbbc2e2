//! CRI-O and podman config (containers-registries.conf(5)): one `[[registry]]` per
//! upstream host with a path-prefix mirror at the local registry, which the registry's
//! path-prefix mode serves (`/v2/example.hub/team/app/...`). There is no catch-all in this
//! format, so only the hosts the installer holds images for are listed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::install::mirror::SiteMirror;

/// The drop-in folder both read, inside the root.
pub const DROPIN_DIR: &str = "/etc/containers/registries.conf.d";

/// The drop-in of installer `name`.
pub fn dropin_path(name: &str) -> String {
    format!("{DROPIN_DIR}/50-airlock-{name}.conf")
}

/// The drop-in text: every host in `hosts` mirrored (insecure: plain HTTP) at
/// `registry/<host>`, then the host itself (tried when the mirror lacks an image).
pub fn registries_conf(name: &str, hosts: &BTreeSet<String>, registry: SocketAddr) -> String {
    let mut s = format!(
        "# Written by airlock for {name}: pull through the local registry first.\n\
         # `uninstall` removes this file.\n"
    );
    for h in hosts {
        let _ = write!(
            s,
            "\n[[registry]]\nprefix = \"{h}\"\nlocation = \"{h}\"\n\n\
             [[registry.mirror]]\nlocation = \"{registry}/{h}\"\ninsecure = true\n"
        );
    }
    s
}

/// Where the site registry's CA goes for podman and CRI-O (containers-certs.d(5)):
/// `/etc/containers/certs.d/<host[:port]>/ca.crt`.
pub fn site_ca_path(authority: &str) -> String {
    format!("/etc/containers/certs.d/{authority}/ca.crt")
}

/// The drop-in for a site registry (`install --registry`): every host in `hosts` mirrored
/// at `<site>/<prefix>/<host>` (the names `registry push` gives), then the host itself.
/// `insecure` only for a plain-HTTP site.
pub fn site_registries_conf(name: &str, hosts: &BTreeSet<String>, site: &SiteMirror) -> String {
    let mut s = format!(
        "# Written by airlock for {name}: pull from the site registry first.\n\
         # `uninstall` removes this file.\n"
    );
    for h in hosts {
        let _ = write!(
            s,
            "\n[[registry]]\nprefix = \"{h}\"\nlocation = \"{h}\"\n\n\
             [[registry.mirror]]\nlocation = \"{}/{}\"\n",
            site.authority,
            site.path_for(h)
        );
        if site.scheme == "http" {
            s.push_str("insecure = true\n");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_registry_is_the_mirror_of_every_host_under_its_prefix() {
        let hosts: BTreeSet<String> = ["example.hub", "registry.local:5000"]
            .map(String::from)
            .into();
        let site = SiteMirror {
            scheme: "https".into(),
            authority: "harbor.site:8443".into(),
            prefix: "mirror".into(),
            ca: Some("/etc/airlock/site-ca.crt".into()),
        };
        let text = site_registries_conf("edge", &hosts, &site);
        assert!(
            text.contains(
                "prefix = \"example.hub\"\nlocation = \"example.hub\"\n\n\
                 [[registry.mirror]]\nlocation = \"harbor.site:8443/mirror/example.hub\"\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("location = \"harbor.site:8443/mirror/registry.local_5000\""),
            "{text}"
        );
        assert!(!text.contains("insecure"), "{text}");
        let plain = SiteMirror {
            scheme: "http".into(),
            ..site
        };
        assert_eq!(
            site_registries_conf("edge", &hosts, &plain)
                .matches("insecure = true")
                .count(),
            2
        );
        assert_eq!(
            site_ca_path("harbor.site:8443"),
            "/etc/containers/certs.d/harbor.site:8443/ca.crt"
        );
    }

    #[test]
    fn every_host_gets_a_registry_with_a_path_prefix_mirror() {
        let hosts: BTreeSet<String> = ["docker.io", "registry.local:5000"]
            .map(String::from)
            .into();
        assert_eq!(
            registries_conf("edge", &hosts, "127.0.0.1:5000".parse().unwrap()),
            "# Written by airlock for edge: pull through the local registry first.\n\
             # `uninstall` removes this file.\n\
             \n[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n\n\
             [[registry.mirror]]\nlocation = \"127.0.0.1:5000/docker.io\"\ninsecure = true\n\
             \n[[registry]]\nprefix = \"registry.local:5000\"\nlocation = \"registry.local:5000\"\n\n\
             [[registry.mirror]]\nlocation = \"127.0.0.1:5000/registry.local:5000\"\ninsecure = true\n"
        );
        assert_eq!(
            dropin_path("edge"),
            "/etc/containers/registries.conf.d/50-airlock-edge.conf"
        );
    }
}
