//! The deterministic consensus simulator of medchain (`sim/`) and its `medchain-sim` binary.
//!
//! The multi-process end-to-end tests of the `medchain` binary live in the node package
//! (`node/tests/`), where Cargo builds the binary of the code under test before them.

pub mod sim;
