//! The chat room's conformance checker and load (`loadgen chat-check`,
//! `loadgen chat`): the Budget Chat protocol, the slow-member promise, and
//! fan-out measured from each send to each receipt.

pub mod check;
pub mod load;
