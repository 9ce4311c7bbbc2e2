//! CRI-O and podman config (containers-registries.conf(5)): one `[[registry]]` per
//! upstream host with a path-prefix mirror at the local registry, which the registry's
//! path-prefix mode serves (`/v2/example.hub/team/app/...`). There is no catch-all in this
//! format, so only the hosts the installer holds images for are listed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
