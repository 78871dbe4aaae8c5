//! pbxfw-py: the Python bindings of pbxfw.
//!
//! It will be a thin pyo3 crate built with maturin into an abi3 wheel whose package is `pbxfw`
//! with a private native module `pbxfw._pbxfw`, type stubs and `py.typed` (the "Python
//! bindings" issue). It holds no code yet: the crate exists so that the workspace has the shape
//! SPEC section 1 gives it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
