//! Command execution: data pointers (PRPs, SGLs) and the NVM I/O commands.

pub mod io;
pub mod nvm;
pub mod prp;
pub mod segment;
pub mod sgl;
