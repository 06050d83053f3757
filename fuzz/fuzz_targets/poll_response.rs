//! A poll answer from the server, decoded, sequenced against the cursor and
//! planned: see `corral_dataplane::fuzz::poll_response` for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corral_dataplane::fuzz::poll_response(data));
