//! pbxfw-capi: the C ABI of pbxfw, for a PBX's PHP module (through PHP FFI) and C programs.
//!
//! It will export opaque handles for a validated policy and the responsive state machine,
//! `pbxfw_<object>_<verb>` functions returning numbered result codes, a cbindgen-generated and
//! committed `pbxfw.h`, and a PHP-FFI-ready `pbxfw_php.h` (the "C API and PHP" issue).
//!
//! No function is exported yet: the crate builds as an empty `cdylib`/`staticlib` so that the
//! workspace has the shape SPEC section 1 gives it.
#![deny(missing_docs)]
