//! YAML as kubectl reads it ([`mod@read`]: YAML 1.1 resolution of plain scalars) and written so that
//! YAML 1.1 and 1.2 readers read it the same ([`mod@write`]).

pub mod read;
pub mod write;

pub use read::{documents, ReadError};
pub use write::{is_plain_safe, to_string};
