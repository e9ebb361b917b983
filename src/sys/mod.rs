//! Every raw syscall and `unsafe` block of supd lives under this module, each with a
//! `// SAFETY:` comment.

pub mod confine;
pub mod exe;
pub mod fd;
pub mod process;
