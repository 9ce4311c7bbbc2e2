//! The registry under a short load: concurrent pullers next to a stream of malformed
//! requests and slow-loris connections (the CI-sized version of `bench/load.sh`). Every
//! valid request must be answered correctly, byte for byte; malformed ones only with a 4xx
//! or a closed connection; the server must stay up with bounded memory.

mod util;

use std::time::Duration;

use airlock_fixtures::images::{write_docker_archive_legacy, write_oci_layout, ImageContent};
use airlock_loadgen::{run, Config, MALFORMED_KINDS};
use util::oci::ServedRegistry;
use util::Workdir;

#[test]
fn registry_answers_every_valid_request_under_load_next_to_malformed_ones() {
    let work = Workdir::new();
    // An index with a large random layer (several raw frames), a plain manifest, and a
    // docker archive whose uncompressed layers sit in zstd frames (decoded while served).
    write_oci_layout(
        &work.join("images/layout"),
        &[
            (
                "1.0",
                ImageContent::new("load app").with_extra_layer(11),
                true,
            ),
            ("small", ImageContent::new("load small"), false),
        ],
    )
    .expect("write the OCI layout");
    write_docker_archive_legacy(
        &work.join("images/etcd.tar"),
        "quay.io/coreos/etcd:v3.5.0",
        &ImageContent::new("load etcd"),
    )
    .expect("write the docker archive");
    work.write_spec(
        r#"name: load
version: "1"
images:
  - ref: example.hub/team/app:1.0
    from: oci:images/layout:1.0
  - ref: docker.io/library/small:1
    from: oci:images/layout:small
  - ref: quay.io/coreos/etcd:v3.5.0
    from: docker-archive:images/etcd.tar
"#,
    );
    let installer = work.build("load.run");
    let reg = ServedRegistry::start(&installer);

    let images = [
        "team/app:1.0?ns=example.hub",
        "library/small:1?ns=docker.io",
        // No `ns`: the upstream as a path prefix, as skopeo and podman send it.
        "quay.io/coreos/etcd:v3.5.0",
    ];
    let mut cfg = Config::new(
        reg.addr.parse().expect("a socket address"),
        images
            .iter()
            .map(|i| i.parse().expect("an image"))
            .collect(),
    );
    cfg.clients = 16;
    cfg.duration = Duration::from_secs(5);
    cfg.malformed_workers = 2;
    cfg.slowloris = 8;
    cfg.pid = Some(reg.pid());
    let r = run(&cfg).expect("the load generator sets up");
    eprintln!("{r:#?}");

    assert_eq!(
        r.valid_errors, 0,
        "errors on valid requests: {:?}",
        r.error_samples
    );
    assert!(r.pulls >= 16, "only {} complete pulls in 5 s", r.pulls);
    for kind in ["manifest", "blob", "head", "range"] {
        assert!(
            r.latency_by_kind.get(kind).is_some_and(|l| l.count > 0),
            "no {kind} request was served"
        );
    }
    assert_eq!(
        r.malformed_unexpected, 0,
        "malformed requests answered wrongly: {:?}",
        r.unexpected_samples
    );
    for kind in MALFORMED_KINDS {
        assert!(
            r.malformed_outcomes.contains_key(kind),
            "no {kind} request was sent"
        );
    }
    assert!(r.alive, "the registry died or stopped answering");
    let peak = r.peak_rss_kib.expect("VmHWM of the registry");
    assert!(peak < 200 << 10, "peak RSS {} MiB", peak >> 10);
}
