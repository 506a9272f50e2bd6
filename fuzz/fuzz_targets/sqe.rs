//! libFuzzer entry of the `sqe` target; the harness and oracle are in
//! `src/sqe.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nvmefast_fuzz::sqe::run_one(data));
