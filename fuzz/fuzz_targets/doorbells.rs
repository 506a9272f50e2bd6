//! libFuzzer entry of the `doorbells` target: doorbell value sequences
//! (MMIO, shadow with EventIdx, page, page + ioeventfd) against the driver
//! mock with the exactly-once oracle. The program language and the oracle
//! are `nvmefast::driver::doorbell_fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let r = nvmefast::driver::doorbell_fuzz::run(data);
    assert!(r.faults.is_empty(), "exactly-once broken: {:?}", r.faults);
    assert_eq!(r.completed, r.submitted);
});
