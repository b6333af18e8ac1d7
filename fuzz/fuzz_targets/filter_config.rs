//! The filter's plugin configuration parser on any bytes: an error or a config, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = auth_filter::FilterConfig::parse(data);
});
