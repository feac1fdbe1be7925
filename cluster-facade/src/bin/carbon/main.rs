//! The `carbon` program (being built: see issue "carbon program").
fn main() {}
