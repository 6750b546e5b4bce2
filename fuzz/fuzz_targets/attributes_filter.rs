//! Fuzzes the segmentation filter parser: never panics, and what parses prints back to an equal filter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::Filter;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(filter) = Filter::parse(text) {
        let printed = filter.to_string();
        let again = Filter::parse(&printed);
        assert_eq!(again.ok().as_ref(), Some(&filter), "{printed}");
        let attrs = [("a".to_owned(), text.to_owned())].into_iter().collect();
        let _ = filter.matches(&attrs);
    }
    let _ = switchboard::attributes::Decimal::parse(text);
});
