//! YAML as kubectl reads it ([`mod@read`]: YAML 1.1 resolution of plain scalars) and written so that
//! YAML 1.1 and 1.2 readers read it the same ([`mod@write`]).

pub(crate) mod read;
pub(crate) mod write;

pub(crate) use read::documents;
pub(crate) use write::to_string;
