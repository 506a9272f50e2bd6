//! Command execution: data pointers (PRPs, SGLs) and the NVM I/O commands.

pub mod io;
pub mod meta;
pub mod nvm;
pub mod protect;
pub mod prp;
pub mod segment;
pub mod sgl;
