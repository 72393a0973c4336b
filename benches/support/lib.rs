//! Shared support for the workspace's examples and criterion benchmarks: the root package holds
//! only `examples/` and `benches/`, and this small library is where code they share lives.
