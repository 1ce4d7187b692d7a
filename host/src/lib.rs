//! AMVM host: policy runtime, scheduler core, and the command line behind the `amvm` binary.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of subsystems.

pub mod api;
pub mod cli;
pub mod controller;
pub mod lab;
pub mod monitor;
pub mod openstack;
pub mod policy;
pub mod scheduler;
pub mod sim;
pub mod volume;
