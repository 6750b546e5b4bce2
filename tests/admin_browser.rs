//! Admin console in headless Chromium (placeholder while being written).
fn main() {}
