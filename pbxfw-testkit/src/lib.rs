//! Test support shared by pbxfw's crates: policy and packet generators for property tests, and
//! network namespaces with real-packet probes for kernel tests. Not published; used as a
//! dev-dependency only.
#![deny(missing_docs)]

pub mod gen;
pub mod netns;
pub mod probe;
