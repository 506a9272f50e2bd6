//! Command execution: data pointers (PRPs) and the NVM I/O commands.

pub mod io;
pub mod prp;
