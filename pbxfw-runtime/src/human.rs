//! Times as people read them (`in 23 h 59 min`) and as JSON gives them (ISO 8601 beside
//! Unix seconds): the core's formatting, for every front end.

pub use pbxfw_core::human::{duration, iso8601, relative};
