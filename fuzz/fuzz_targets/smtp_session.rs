#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrymail::fuzz::smtp_session(data));
