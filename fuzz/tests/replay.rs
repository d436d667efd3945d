//! Replays the seed corpora (`seeds/<target>/`) and the saved crash reproducers
//! (`regressions/<target>/`) through the fuzz targets' checks. Runs on a stable toolchain:
//! `cd fuzz && cargo test`.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).unwrap();
            eprintln!("{}", path.display());
            check(&data);
            n += 1;
        }
    }
    assert!(n > 0, "no inputs for {target}");
}

#[test]
fn client_frame() {
    replay("client_frame", socketshark_fuzz::client_frame);
}

#[test]
fn published_message() {
    replay("published_message", socketshark_fuzz::published_message);
}

#[test]
fn pyjson() {
    replay("pyjson", socketshark_fuzz::pyjson);
}

#[test]
fn isotime() {
    replay("isotime", socketshark_fuzz::isotime);
}
