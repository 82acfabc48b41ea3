//! Any text as a data source spec and a brace pattern: bounded expansion, clear errors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let spec = String::from_utf8_lossy(data);
    if let Ok(names) = vlp_data::source::expand_braces(&spec) {
        assert!(names.len() as u64 <= vlp_data::source::MAX_EXPANSION);
    }
    // Only specs that cannot reach outside the generator: shapes with any split and count.
    if let Some(rest) = spec.strip_prefix("shapes:") {
        let _ = vlp_data::source::open_source(&format!("shapes:{rest}"), &Default::default());
    }
});
