//! Replays the committed seed corpus through the `sqe` harness without
//! libFuzzer: `cargo test --manifest-path fuzz/Cargo.toml`.

use std::path::Path;

#[test]
fn sqe_corpus_replays_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/sqe");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus/sqe") {
        let path = entry.expect("corpus entry").path();
        nvmefast_fuzz::sqe::run_one(&std::fs::read(&path).expect("corpus file"));
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}
