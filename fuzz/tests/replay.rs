//! Replays the committed seed corpora through the `sqe` and `doorbells` harnesses without
//! libFuzzer: `cargo test --manifest-path fuzz/Cargo.toml`. Every test run does it
//! (`tests/test_fuzz_replay.py`, part of `pytest`), so a core change that breaks the rig
//! fails there.

use std::path::Path;

fn replay(target: &str, mut one: impl FnMut(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        // Captured, and shown only when a seed fails: which one it was.
        eprintln!("replaying {}", path.display());
        one(&std::fs::read(&path).expect("corpus file"));
        n += 1;
    }
    assert!(n > 0, "no seeds in {}", dir.display());
}

#[test]
fn sqe_corpus_replays_clean() {
    replay("sqe", nvmefast_fuzz::sqe::run_one);
}

#[test]
fn doorbells_corpus_replays_clean() {
    replay("doorbells", |data| {
        let r = nvmefast::driver::doorbell_fuzz::run(data);
        assert!(r.faults.is_empty(), "{:?}", r.faults);
        assert_eq!(r.completed, r.submitted);
    });
}
