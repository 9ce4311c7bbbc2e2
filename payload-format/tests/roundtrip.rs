//! Write → read round trips, truncation and corruption of whole installers.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use airlock_payload::*;
use proptest::prelude::*;

const STUB_LEN: usize = 5000;

/// A tree as (path → content or link), written with parents synthesized.
#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>, u32),
    Link(String),
}

fn build(tree: &BTreeMap<String, Node>) -> (Vec<u8>, Vec<Entry>) {
    let mut paths: BTreeMap<String, Option<&Node>> = BTreeMap::new();
    for (p, n) in tree {
        let mut acc = String::new();
        let parts: Vec<&str> = p.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            paths.entry(acc.clone()).or_insert(None);
        }
        paths.insert(p.clone(), Some(n));
    }
    let mut entries = Vec::new();
    let mut blobs: Vec<BlobInput> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (p, n) in &paths {
        let path: EntryPath = p.clone().try_into().unwrap();
        let (mode, kind) = match n {
            None => (0o755, EntryKind::Dir),
            Some(Node::Link(t)) => (0o777, EntryKind::Symlink { target: t.clone() }),
            Some(Node::File(data, mode)) => {
                let digest = Sha256Digest::of(data);
                if !data.is_empty() && seen.insert(digest) {
                    blobs.push(BlobInput {
                        digest,
                        size: data.len() as u64,
                        precompressed: false,
                        name: p.clone(),
                        source: Box::new(data.clone()),
                    });
                }
                (
                    *mode,
                    EntryKind::File {
                        size: data.len() as u64,
                        digest,
                    },
                )
            }
        };
        entries.push(Entry { path, mode, kind });
    }
    let info = BuildInfo {
        name: "t".into(),
        version: "1".into(),
        platform: "linux/amd64".into(),
        created: 1,
        mtime: 1,
        builder: "test".into(),
    };
    let mut out = Cursor::new(Vec::new());
    write_installer(
        &mut out,
        &vec![0x7f; STUB_LEN],
        &info,
        PayloadContents {
            blobs,
            entries: entries.clone(),
            ..Default::default()
        },
        WriteOptions::default(),
        &|_| {},
    )
    .unwrap();
    (out.into_inner(), entries)
}

fn read_file(payload: &Payload<'_>, path: &str) -> Vec<u8> {
    let entry = payload.index().entry(path).unwrap();
    let EntryKind::File { size, digest } = &entry.kind else {
        panic!("{path} is not a file")
    };
    if *size == 0 {
        return Vec::new();
    }
    let blob = payload.index().blob(digest).unwrap();
    let mut out = Vec::new();
    payload.blob_reader(blob).read_to_end(&mut out).unwrap();
    out
}

fn sample_tree() -> BTreeMap<String, Node> {
    let mut t = BTreeMap::new();
    let big: Vec<u8> = (0..(9u32 << 20) + 3)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    t.insert(
        "a/b/c/d/e/deep.txt".into(),
        Node::File(b"deep".to_vec(), 0o600),
    );
    t.insert("bin/big".into(), Node::File(big.clone(), 0o755));
    t.insert("bin/big-copy".into(), Node::File(big, 0o755));
    t.insert("empty".into(), Node::File(Vec::new(), 0o644));
    t.insert(
        "naïve – файл".into(),
        Node::File(b"unicode".to_vec(), 0o644),
    );
    t.insert("-rf".into(), Node::File(vec![b'x'; 100_000], 0o644));
    t.insert("link".into(), Node::Link("bin/big".into()));
    t
}

#[test]
fn every_file_reads_back_and_identical_content_is_stored_once() {
    let tree = sample_tree();
    let (bytes, _) = build(&tree);
    let inst = Installer::open(&bytes, Some(STUB_LEN as u64)).unwrap();
    assert_eq!(inst.meta().files, 6);
    assert_eq!(
        inst.meta().blob_count,
        4,
        "big and big-copy share one blob; empty has none"
    );
    let payload = inst.load_index().unwrap();
    for (p, n) in &tree {
        match n {
            Node::File(data, mode) => {
                assert_eq!(&read_file(&payload, p), data, "{p}");
                assert_eq!(payload.index().entry(p).unwrap().mode, *mode);
            }
            Node::Link(t) => {
                assert_eq!(
                    payload.index().entry(p).unwrap().kind,
                    EntryKind::Symlink { target: t.clone() }
                )
            }
        }
    }
    assert!(inst.verify_stub().is_ok());
    let report = payload.verify(true, &|_| {});
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert!(
        payload.index().frames().len() >= 3,
        "a 9 MiB blob spans three frames"
    );
}

#[test]
fn output_is_byte_identical_for_identical_input() {
    let tree = sample_tree();
    assert_eq!(build(&tree).0, build(&tree).0);
}

#[test]
fn truncation_at_any_length_is_reported_as_truncation() {
    let (bytes, _) = build(&sample_tree());
    let payload_start = align_payload(STUB_LEN as u64) as usize;
    let mut lengths: Vec<usize> = (0..200)
        .map(|i| payload_start + 64 + i * (bytes.len() - payload_start) / 200)
        .collect();
    lengths.extend([bytes.len() - 1, bytes.len() - 255, payload_start + 64]);
    for len in lengths {
        match Installer::open(&bytes[..len], Some(STUB_LEN as u64)) {
            Err(Error::Truncated {
                actual,
                expected,
                missing,
            }) => {
                assert_eq!(
                    (actual, expected, missing),
                    (len as u64, bytes.len() as u64, (bytes.len() - len) as u64)
                )
            }
            other => panic!("length {len}: {other:?}"),
        }
    }
    let err = Installer::open(&bytes[..STUB_LEN], Some(STUB_LEN as u64)).unwrap_err();
    assert!(err.to_string().contains("stripped"), "{err}");
    let err = Installer::open(&bytes[..payload_start + 10], Some(STUB_LEN as u64)).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn appended_bytes_are_reported() {
    let (mut bytes, _) = build(&sample_tree());
    bytes.extend_from_slice(b"junk");
    let err = Installer::open(&bytes, Some(STUB_LEN as u64)).unwrap_err();
    assert!(err.to_string().contains("4 bytes were appended"), "{err}");
}

/// Opens, loads and verifies; `Ok` only if nothing noticed damage.
fn full_check(bytes: &[u8]) -> Result<(), String> {
    let inst = Installer::open(bytes, Some(STUB_LEN as u64)).map_err(|e| e.to_string())?;
    inst.verify_stub().map_err(|e| e.to_string())?;
    let payload = inst.load_index().map_err(|e| e.to_string())?;
    let report = payload.verify(false, &|_| {});
    match report.damaged.first() {
        Some(e) => Err(e.to_string()),
        None => Ok(()),
    }
}

#[test]
fn a_flipped_byte_anywhere_is_detected_and_named() {
    let (bytes, _) = build(&sample_tree());
    let inst = Installer::open(&bytes, Some(STUB_LEN as u64)).unwrap();
    let t = *inst.trailer();
    let frames = t.frames_range();
    let mut offsets: Vec<usize> = (0..bytes.len()).step_by(bytes.len() / 300).collect();
    offsets.extend([
        0,
        STUB_LEN - 1,
        t.payload_offset as usize + 3,
        frames.start,
        frames.end - 1,
    ]);
    offsets.extend(t.meta_range().start..t.meta_range().start + 3);
    offsets.extend(t.index_range().start..t.index_range().start + 3);
    offsets.extend(bytes.len() - 256..bytes.len());
    for off in offsets {
        let mut damaged = bytes.clone();
        damaged[off] ^= 0x01;
        let err = full_check(&damaged).expect_err(&format!("flip at {off} went unnoticed"));
        if frames.contains(&off) {
            assert!(
                err.contains("frame") && err.contains("affecting"),
                "flip at {off}: {err}"
            );
        }
    }
}

#[test]
fn a_damaged_frame_is_never_returned_by_a_reader() {
    let (bytes, _) = build(&sample_tree());
    let inst = Installer::open(&bytes, None).unwrap();
    let frames = inst.trailer().frames_range();
    let mut damaged = bytes.clone();
    damaged[frames.start + 10] ^= 0xff;
    let inst = Installer::open(&damaged, None).unwrap();
    let payload = inst.load_index().unwrap();
    let entry_paths: Vec<String> = payload
        .index()
        .entries()
        .iter()
        .map(|e| e.path.to_string())
        .collect();
    let mut failed = 0;
    for p in entry_paths {
        let e = payload.index().entry(&p).unwrap();
        if let EntryKind::File { digest, size } = &e.kind {
            if *size == 0 {
                continue;
            }
            let blob = payload.index().blob(digest).unwrap();
            let mut out = Vec::new();
            match payload.blob_reader(blob).read_to_end(&mut out) {
                Ok(_) => assert_eq!(Sha256Digest::of(&out), *digest, "{p} returned wrong bytes"),
                Err(e) => {
                    assert!(e.to_string().contains("frame 0"), "{e}");
                    failed += 1;
                }
            }
        }
    }
    assert!(failed > 0, "the damaged frame was never read");
}

fn tree_strategy() -> impl Strategy<Value = BTreeMap<String, Node>> {
    let name = prop_oneof![
        "[a-z]{1,8}",
        Just("-rf".to_string()),
        Just("sp ace".to_string()),
        Just("ünï".to_string()),
        Just(".hidden".to_string())
    ];
    let path = prop::collection::vec(name, 1..6).prop_map(|v| v.join("/"));
    let node = prop_oneof![
        4 => (prop::collection::vec(any::<u8>(), 0..3000), prop_oneof![Just(0o644u32), Just(0o755), Just(0o600)])
            .prop_map(|(d, m)| Node::File(d, m)),
        1 => (0usize..2_000_000, any::<u8>()).prop_map(|(n, b)| Node::File(vec![b; n], 0o644)),
        1 => "[a-z/.]{1,20}".prop_map(Node::Link),
    ];
    prop::collection::btree_map(path, node, 0..40).prop_map(|mut m| {
        // A path that is a prefix folder of another cannot also be a file.
        let keys: Vec<String> = m.keys().cloned().collect();
        for k in &keys {
            if keys.iter().any(|o| o.starts_with(&format!("{k}/"))) {
                m.remove(k);
            }
        }
        m
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_trees_round_trip(tree in tree_strategy()) {
        let (bytes, entries) = build(&tree);
        let inst = Installer::open(&bytes, Some(STUB_LEN as u64)).unwrap();
        let payload = inst.load_index().unwrap();
        prop_assert_eq!(payload.index().entries(), &entries[..]);
        for (p, n) in &tree {
            if let Node::File(data, _) = n {
                prop_assert_eq!(&read_file(&payload, p), data);
            }
        }
        let report = payload.verify(true, &|_| ());
        prop_assert!(report.damaged.is_empty());
    }
}

#[test]
fn truncation_inside_the_program_is_reported_as_truncation() {
    let (bytes, _) = build(&sample_tree());
    let err = Installer::open(&bytes[..1000], Some(STUB_LEN as u64)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TruncatedProgram {
                actual: 1000,
                program_len: 5000
            }
        ),
        "{err}"
    );
}

fn small_tree() -> BTreeMap<String, Node> {
    let mut t = BTreeMap::new();
    t.insert("etc/motd".into(), Node::File(b"hello".to_vec(), 0o644));
    t
}

fn with_signatures(unsigned: &[u8], sigs: &[&str]) -> Vec<u8> {
    let section = SignatureSection {
        signed_len: unsigned.len() as u64,
        signatures: sigs.iter().map(|s| s.to_string()).collect(),
    };
    let mut file = unsigned.to_vec();
    file.extend(section.to_bytes().unwrap());
    file
}

#[test]
fn a_signed_file_opens_and_its_message_is_the_unsigned_file() {
    let (unsigned, _) = build(&small_tree());
    let signed = with_signatures(&unsigned, &["one", "two"]);
    let inst = Installer::open(&signed, Some(STUB_LEN as u64)).unwrap();
    assert_eq!(inst.signed_message(), &unsigned[..]);
    assert_eq!(inst.signatures(), ["one", "two"]);
    assert_eq!(inst.format_version(), FORMAT_VERSION);
    assert_eq!(inst.summary().file_len, signed.len() as u64);
    assert_eq!(inst.summary().signed_len, unsigned.len() as u64);
    let payload = inst.load_index().unwrap();
    assert!(payload.verify(true, &|_| {}).damaged.is_empty());
    assert_eq!(read_file(&payload, "etc/motd"), b"hello");
}

#[test]
fn a_signature_section_cut_short_is_named_as_damaged_signatures() {
    let (unsigned, _) = build(&small_tree());
    let signed = with_signatures(&unsigned, &["one"]);
    for cut in [
        1,
        20,
        SIGNATURE_FOOTER_LEN as usize,
        signed.len() - unsigned.len() - 1,
    ] {
        let err =
            Installer::open(&signed[..signed.len() - cut], Some(STUB_LEN as u64)).unwrap_err();
        assert!(err.is_corrupt(), "{cut}: {err}");
        assert!(
            err.to_string().contains("signature section is damaged"),
            "{cut}: {err}"
        );
    }
}

#[test]
fn version_1_files_still_open_and_verify_but_cannot_carry_signatures() {
    let tree = small_tree();
    let (v2, entries) = build(&tree);
    // The same tree written as version 1.
    let Node::File(data, _) = &tree["etc/motd"] else {
        unreachable!()
    };
    let digest = Sha256Digest::of(data);
    let info = BuildInfo {
        name: "t".into(),
        version: "1".into(),
        platform: "linux/amd64".into(),
        created: 1,
        mtime: 1,
        builder: "test".into(),
    };
    let mut out = Cursor::new(Vec::new());
    write_installer(
        &mut out,
        &vec![0x7f; STUB_LEN],
        &info,
        PayloadContents {
            blobs: vec![BlobInput {
                digest,
                size: data.len() as u64,
                precompressed: false,
                name: "etc/motd".into(),
                source: Box::new(data.clone()),
            }],
            entries,
            ..Default::default()
        },
        WriteOptions {
            format_version: 1,
            ..WriteOptions::default()
        },
        &|_| {},
    )
    .unwrap();
    let v1 = out.into_inner();
    assert_eq!(v1.len(), v2.len(), "only the version fields differ");
    let inst = Installer::open(&v1, Some(STUB_LEN as u64)).unwrap();
    assert_eq!(inst.format_version(), 1);
    let payload = inst.load_index().unwrap();
    assert!(payload.verify(true, &|_| {}).damaged.is_empty());
    let err = Installer::open(&with_signatures(&v1, &["x"]), None).unwrap_err();
    assert!(err.to_string().contains("version 1"), "{err}");
}
