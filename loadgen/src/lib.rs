//! The load generator as a library, so its own tests (and other crates'
//! tests) can call `run`, `compare` and `check` in-process.
//!
//! | module      | what it does                                                  |
//! |-------------|---------------------------------------------------------------|
//! | [`child`]   | start a chapter's server binary on port 0, learn its address, stop it |
//! | [`run`]     | drive one server: connections, sizes, pipelining, rate, latency |
//! | [`compare`] | every server, the same matrix, one table and charts           |
//! | [`check`]   | conformance and robustness cases, `PASS`/`FAIL`/`SKIP` per case |

pub mod check;
pub mod child;
pub mod compare;
pub mod run;
