//! The load generator as a library, so its own tests (and other crates'
//! tests) can call `run`, `compare` and `check` in-process.
//!
//! | module      | what it does                                                  |
//! |-------------|---------------------------------------------------------------|
//! | [`child`]   | start a chapter's server binary on port 0, learn its address, stop it |
//! | [`run`]     | `loadgen run`: its flags and the report                       |
//! | [`drive`]   | the engine and its configuration (`RunConfig`, `Proto`): a writer and a reader per connection |
//! | [`payload`] | a different payload per request, verified byte for byte       |
//! | [`tls`]     | the TLS flags (`TlsArgs`) and the rustls client behind them   |
//! | [`compare`] | every server, the same matrix, one table and charts; `--chat`: the chat designs |
//! | [`chart`]   | the SVG charts of `compare` (plotters, no system fonts)       |
//! | [`sys`]     | the machine: CPU pinning, kernel, CPU count, fd limit, date   |
//! | [`check`]   | conformance and robustness cases, `PASS`/`FAIL`/`SKIP` per case |
//! | [`histlog`] | `run --hist-log`: the latency as an HdrHistogram interval log; `merge` adds logs up |
//! | [`hold`]    | N idle connections held open: the server's RSS per connection |
//! | [`refs`]    | the syscalls `select-ref` and `poll-ref` share around their readiness call |
//! | [`chat`]    | the chat room: `chat-check` (Budget Chat conformance, slow members) and `chat` (fan-out load) |

pub mod chart;
pub mod chat;
pub mod check;
pub mod child;
pub mod compare;
pub mod drive;
pub mod histlog;
pub mod hold;
pub mod latency;
pub mod payload;
pub mod refs;
pub mod run;
pub mod sys;
pub mod tls;
