//! The full-sync diff: see `corral_dataplane::fuzz::full_sync_diff` for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corral_dataplane::fuzz::full_sync_diff(data));
